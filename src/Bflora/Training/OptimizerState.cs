using System.Text.Json.Serialization;
using Bflora.Checkpoints;
using Bflora.Distributed;
using static TorchSharp.torch;

namespace Bflora.Training;

/// <summary>One parameter inside a saved optimizer slot: its full shape and where it starts in the slot's flat range.</summary>
public sealed record SavedMember(
    [property: JsonPropertyName("name")] string Name,
    [property: JsonPropertyName("shape")] long[] Shape,
    [property: JsonPropertyName("offset")] long Offset);

/// <summary>
/// One optimizer slot as a checkpoint records it: its members back to back, and how many elements of that flat range
/// each rank's file holds (rank q holds [q·shard_numel, (q+1)·shard_numel), the last one padded).
/// </summary>
public sealed record SavedSlot(
    [property: JsonPropertyName("name")] string Name,
    [property: JsonPropertyName("shard_numel")] long ShardNumel,
    [property: JsonPropertyName("members")] IReadOnlyList<SavedMember> Members);

/// <summary>
/// The masters and AdamW moments in trainer_state/: one safetensors file per rank (its slots' shards, keys
/// "slot/master", "slot/exp_avg", "slot/exp_avg_sq") and, in state.json, the slots' layouts. The layouts make a
/// checkpoint readable at any world size: each rank of the resuming run reads, member by member, just the element
/// ranges its own slots hold, from whichever files hold them (resharding; world 1 ↔ N included).
/// </summary>
public static class OptimizerState
{
    private static readonly string[] Kinds = { "master", "exp_avg", "exp_avg_sq" };

    /// <summary>A slot's three tensors in <see cref="Kinds"/>' order.</summary>
    private static Tensor[] Parts(AdamWSlot slot) => new[] { slot.Master, slot.ExpAvg, slot.ExpAvgSq };

    /// <summary>The layouts of <paramref name="session"/>'s slots, as state.json records them.</summary>
    public static IReadOnlyList<SavedSlot> Describe(TrainingSession session) => session.SlotLayouts
        .Select(s => new SavedSlot(s.Slot.Name, s.Layout.ShardNumel,
            s.Layout.Members.Select(m => new SavedMember(m.Name, m.Shape, m.Offset)).ToList()))
        .ToList();

    /// <summary>Writes this rank's file of slot shards into <paramref name="stateFolder"/>.</summary>
    public static void Write(string stateFolder, TrainingSession session)
    {
        int world = session.Layout.World, rank = session.Fsdp?.Collectives.Rank ?? 0;
        var tensors = new Dictionary<string, Tensor>();
        foreach (var slot in session.Slots)
        {
            var parts = Parts(slot);
            for (int k = 0; k < Kinds.Length; k++) tensors[$"{slot.Name}/{Kinds[k]}"] = parts[k];
        }
        SafetensorsWriter.Write(Path.Combine(stateFolder, Checkpointer.OptimizerFileOf(rank, world)), tensors);
    }

    /// <summary>
    /// Fills <paramref name="session"/>'s slots (this rank's shards) from a checkpoint written at any world size. The
    /// checkpoint must hold exactly the parameters the session trains, in the same shapes. Padding stays as it is.
    /// </summary>
    public static void Read(string stateFolder, TrainerState state, TrainingSession session)
    {
        var saved = state.OptimizerSlots ?? (state.WorldSize == session.Layout.World
            // Checkpoints from before layouts were recorded: at their own world size the session's layout is theirs.
            ? Describe(session)
            : throw new BfloraInputException(
                $"the checkpoint in {stateFolder} was written by {state.WorldSize} ranks and does not record its optimizer " +
                $"layout, so it cannot be resharded for {session.Layout.World}; resume with parallelism.fsdp_degree = {state.WorldSize}"));
        Read(stateFolder, saved, state.WorldSize, session.SlotLayouts, session.Fsdp?.Collectives.Rank ?? 0);
    }

    /// <summary>
    /// <see cref="Read(string, TrainerState, TrainingSession)"/> for given slots: <paramref name="slots"/> are rank
    /// <paramref name="rank"/>'s, <paramref name="saved"/> the layouts of the checkpoint's <paramref name="savedWorld"/> files.
    /// </summary>
    public static void Read(string stateFolder, IReadOnlyList<SavedSlot> saved, int savedWorld,
        IReadOnlyList<(AdamWSlot Slot, FlatLayout Layout)> slots, int rank)
    {
        var where = new Dictionary<string, (SavedSlot Slot, SavedMember Member)>();
        foreach (var slot in saved)
            foreach (var m in slot.Members)
                where[m.Name] = (slot, m);

        var source = new ShardFiles(stateFolder, savedWorld);
        var trained = new HashSet<string>();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        foreach (var (slot, layout) in slots)
        {
            var targets = Parts(slot).Select(t => t.view(-1)).ToArray();
            foreach (var m in layout.Members)
            {
                trained.Add(m.Name);
                if (!where.TryGetValue(m.Name, out var from))
                    throw new BfloraInputException($"the checkpoint has no optimizer state for '{m.Name}'");
                if (!from.Member.Shape.SequenceEqual(m.Shape))
                    throw new BfloraInputException(
                        $"the checkpoint's '{m.Name}' has shape [{string.Join(", ", from.Member.Shape)}], the model's " +
                        $"[{string.Join(", ", m.Shape)}] ({ShapeHint(m.Name, from.Member.Shape, m.Shape)})");
                if (layout.Overlap(m, rank) is (long start, long at, long count))
                    source.Copy(from.Slot, from.Member.Offset + start, count, targets, at);
            }
        }
        if (where.Keys.FirstOrDefault(name => !trained.Contains(name)) is { } extra)
            throw new BfloraInputException($"the checkpoint has optimizer state for '{extra}', which this run does not train");
    }

    /// <summary>The per-rank files of one checkpoint, each opened when a range is first needed from it.</summary>
    private sealed class ShardFiles(string folder, int world)
    {
        private readonly SafetensorsFile?[] _files = new SafetensorsFile?[world];

        /// <summary>
        /// Copies elements [index, index + count) of <paramref name="slot"/>'s flat range, for each of the three
        /// tensors, into <paramref name="targets"/> from element <paramref name="at"/> on; the range may span files.
        /// </summary>
        public void Copy(SavedSlot slot, long index, long count, Tensor[] targets, long at)
        {
            while (count > 0)
            {
                var (file, within) = Locate(slot, index);
                long n = Math.Min(count, slot.ShardNumel - within);
                for (int k = 0; k < Kinds.Length; k++)
                {
                    string key = $"{slot.Name}/{Kinds[k]}";
                    long held = file.Info(key).Numel;
                    if (held < within + n)
                        throw new CheckpointFormatException(file.Path,
                            $"tensor '{key}' has {held} elements, the recorded layout needs {within + n}");
                    using var part = targets[k].narrow(0, at, n);
                    file.ReadFlatSlice(key, within, n, part);
                }
                index += n;
                at += n;
                count -= n;
            }
        }

        /// <summary>The file of the rank whose shard holds element <paramref name="index"/> of the slot, and where in it.</summary>
        private (SafetensorsFile File, long Within) Locate(SavedSlot slot, long index)
        {
            long rank = slot.ShardNumel > 0 ? index / slot.ShardNumel : long.MaxValue;
            if (rank >= _files.Length)
                throw new BfloraInputException(
                    $"{folder}/{Checkpointer.StateJson}: slot '{slot.Name}' does not fit the {_files.Length} rank(s) that wrote it");
            var file = _files[rank] ??= SafetensorsFile.Open(Path.Combine(folder, Checkpointer.OptimizerFileOf((int)rank, _files.Length)));
            return (file, index - rank * slot.ShardNumel);
        }
    }

    /// <summary>What a shape mismatch most likely means: only the rank side of A or B differs → lora.r, else another model.</summary>
    private static string ShapeHint(string name, long[] saved, long[] now)
    {
        int rankAxis = name.EndsWith(".lora_A", StringComparison.Ordinal) ? 0 : name.EndsWith(".lora_B", StringComparison.Ordinal) ? 1 : -1;
        bool onlyRank = rankAxis >= 0 && saved.Length == 2 && now.Length == 2 && saved[1 - rankAxis] == now[1 - rankAxis];
        return onlyRank ? $"lora.r {saved[rankAxis]} in the checkpoint, {now[rankAxis]} in the config" : "a checkpoint of another model?";
    }
}
