using Bflora.Checkpoints;
using Bflora.Distributed;
using Bflora.Training;
using Xunit;
using static TorchSharp.torch;

namespace Bflora.Tests.Training;

/// <summary>
/// Resharding the optimizer state: a checkpoint whose slots were sharded over 3 ranks (padded) is read into the
/// layouts of 2 ranks, of 4, and of one rank (one slot per parameter); every element must land where its parameter's
/// element lies in the new layout, for the master and both moments.
/// </summary>
public sealed class OptimizerStateTests : IDisposable
{
    private readonly string _folder = Path.Combine(Path.GetTempPath(), $"bflora-optstate-{Guid.NewGuid():N}");

    // Two units of LoRA-like members; 47 and 20 elements, neither a multiple of 3.
    private static readonly (string Unit, (string Name, long[] Shape)[] Members)[] Units =
    {
        ("layers.0.lora", new[] { ("layers.0.wq.lora_A", new long[] { 5, 7 }), ("layers.0.wq.lora_B", new long[] { 3, 4 }) }),
        ("layers.1.lora", new[] { ("layers.1.wq.lora_A", new long[] { 2, 10 }) }),
    };

    public OptimizerStateTests() => Directory.CreateDirectory(_folder);

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    /// <summary>The value a member's element i holds in the saved state (kind 0..2 = master, exp_avg, exp_avg_sq).</summary>
    private static float Value(string member, long i, int kind) =>
        1000 * (Array.FindIndex(Units.SelectMany(u => u.Members).ToArray(), m => m.Name == member) + 1) + i + 0.25f * kind;

    /// <summary>Writes the per-rank files of <paramref name="world"/> ranks; returns the slots' records.</summary>
    private IReadOnlyList<SavedSlot> WriteSharded(int world)
    {
        var records = new List<SavedSlot>();
        var files = Enumerable.Range(0, world).Select(_ => new Dictionary<string, Tensor>()).ToArray();
        foreach (var (unit, members) in Units)
        {
            var layout = new FlatLayout(members, world);
            records.Add(new SavedSlot(unit, layout.ShardNumel, layout.Members.Select(m => new SavedMember(m.Name, m.Shape, m.Offset)).ToList()));
            for (int kind = 0; kind < 3; kind++)
            {
                // Padding holds a value no member has, so reading it anywhere would show.
                var flat = full(layout.PaddedNumel, -1f, ScalarType.Float32);
                foreach (var m in layout.Members)
                    for (long i = 0; i < m.Numel; i++) flat[m.Offset + i] = Value(m.Name, i, kind);
                string key = $"{unit}/{new[] { "master", "exp_avg", "exp_avg_sq" }[kind]}";
                for (int r = 0; r < world; r++) files[r][key] = flat.narrow(0, r * layout.ShardNumel, layout.ShardNumel).clone();
            }
        }
        for (int r = 0; r < world; r++) SafetensorsWriter.Write(Path.Combine(_folder, Checkpointer.OptimizerFileOf(r, world)), files[r]);
        return records;
    }

    private static AdamWSlot EmptySlot(string name, params long[] shape) =>
        new(name, full(shape, 7f), full(shape, 7f), full(shape, 7f));

    [Theory]
    [InlineData(2)]
    [InlineData(4)]
    public void A_three_rank_checkpoint_reshards_onto_another_world(int world)
    {
        var saved = WriteSharded(3);
        for (int rank = 0; rank < world; rank++)
        {
            var slots = Units.Select(u => new FlatLayout(u.Members, world))
                .Select((layout, i) => (Slot: EmptySlot(Units[i].Unit, layout.ShardNumel), Layout: layout)).ToList();
            OptimizerState.Read(_folder, saved, 3, slots, rank);
            foreach (var (slot, layout) in slots)
            {
                var tensors = new[] { slot.Master, slot.ExpAvg, slot.ExpAvgSq }.Select(t => t.data<float>().ToArray()).ToArray();
                var filled = new bool[layout.ShardNumel];
                foreach (var m in layout.Members)
                {
                    if (layout.Overlap(m, rank) is not (long start, long at, long count)) continue;
                    for (long i = 0; i < count; i++)
                    {
                        filled[at + i] = true;
                        for (int kind = 0; kind < 3; kind++)
                            Assert.Equal(Value(m.Name, start + i, kind), tensors[kind][at + i]);
                    }
                }
                // The new world's padding is left as the session made it.
                for (long j = 0; j < layout.ShardNumel; j++)
                    if (!filled[j]) Assert.All(tensors, t => Assert.Equal(7f, t[j]));
            }
        }
    }

    [Fact]
    public void A_three_rank_checkpoint_reads_into_one_slot_per_parameter()
    {
        var saved = WriteSharded(3);
        var slots = Units.SelectMany(u => u.Members)
            .Select(m => (Slot: EmptySlot(m.Name, m.Shape), Layout: new FlatLayout(new[] { m }, 1))).ToList();
        OptimizerState.Read(_folder, saved, 3, slots, rank: 0);
        foreach (var (slot, _) in slots)
        {
            var expected = Enumerable.Range(0, (int)slot.Master.numel()).Select(i => Value(slot.Name, i, 0)).ToArray();
            Assert.Equal(slot.Master.shape, Units.SelectMany(u => u.Members).Single(m => m.Name == slot.Name).Shape);
            Assert.Equal(expected, slot.Master.reshape(-1).data<float>().ToArray());
            Assert.Equal(expected.Select(v => v + 0.5f), slot.ExpAvgSq.reshape(-1).data<float>().ToArray());
        }
    }

    [Fact]
    public void A_checkpoint_that_trains_other_parameters_is_refused_by_name()
    {
        var saved = WriteSharded(3);
        var all = Units.SelectMany(u => u.Members).ToArray();
        var reshaped = all.Select(m => m.Name == "layers.0.wq.lora_B" ? (m.Name, new long[] { 4, 3 }) : m).ToArray();
        var missing = all.Append(("layers.2.wq.lora_A", new long[] { 2, 2 })).ToArray();
        var fewer = all.Where(m => m.Name != "layers.1.wq.lora_A").ToArray();
        foreach (var (members, message) in new[]
                 {
                     (reshaped, "'layers.0.wq.lora_B' has shape [3, 4], the model's [4, 3] (a checkpoint of another model?)"),
                     (missing, "no optimizer state for 'layers.2.wq.lora_A'"),
                     (fewer, "optimizer state for 'layers.1.wq.lora_A', which this run does not train"),
                 })
        {
            var layout = new FlatLayout(members, 1);
            var slots = new[] { (EmptySlot("all", layout.ShardNumel), layout) };
            var e = Assert.Throws<BfloraInputException>(() => OptimizerState.Read(_folder, saved, 3, slots, rank: 0));
            Assert.Contains(message, e.Message);
        }
    }

    [Fact]
    public void A_layout_that_does_not_fit_its_files_is_one_clear_error()
    {
        var saved = WriteSharded(3);
        // Rank 0's file of 3 taken for a whole world-1 checkpoint: the layout then needs elements of a rank that is not there.
        File.Copy(Path.Combine(_folder, Checkpointer.OptimizerFileOf(0, 3)), Path.Combine(_folder, Checkpointer.OptimizerFileOf(0, 1)));
        var layout = new FlatLayout(Units[0].Members, 1);
        var slots = new[] { (EmptySlot(Units[0].Unit, layout.ShardNumel), layout) };
        var e = Assert.Throws<BfloraInputException>(() => OptimizerState.Read(_folder, saved.Take(1).ToList(), 1, slots, rank: 0));
        Assert.Contains("slot 'layers.0.lora' does not fit the 1 rank(s) that wrote it", e.Message);
    }
}
