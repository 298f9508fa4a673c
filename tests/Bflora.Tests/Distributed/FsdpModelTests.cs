using Bflora.Config;
using Bflora.Distributed;
using Bflora.Lora;
using Bflora.Models;
using Xunit;
using static TorchSharp.torch;

namespace Bflora.Tests.Distributed;

/// <summary>
/// The FSDP machinery in one process (N = 1 through <see cref="SingleProcessCollectives"/>): gather buffers, the
/// two-pass recompute and the gradient hand-off must reproduce the plain model's loss and LoRA gradients bit for bit,
/// flips included. The 2-rank behaviour is tested under mpirun in <see cref="FsdpTrainingTests"/>.
/// </summary>
public class FsdpModelTests
{
    [Fact]
    public void Sharded_machinery_at_one_rank_matches_the_plain_model_bit_for_bit()
    {
        // Flips at 0.5^7 per bit so they change the result; step 3 so the seeds are not the step-0 ones.
        var config = BfloraConfig.Load(RepoPaths.Of("configs", "debug.toml"), new[]
        {
            "bitflip.w_p_exp=0.0078125", "bitflip.x_p_exp=0.0078125", "bitflip.w_p_frac=0.0078125", "bitflip.x_p_frac=0.0078125",
        });
        var spec = ModelBuilder.Resolve(config);
        var options = new ConversionOptions(config.Bitflip.ToFlipSettings(), config.Lora.R, config.Lora.LoraAlpha,
            config.Bitflip.SkipPatterns, config.Training.Seed);
        using var generator = new TorchSharp.torch.Generator(7);
        using var inputs = randint(0, spec.Args.VocabSize, new long[] { 2, 24 }, generator: generator);
        using var labels = randint(0, spec.Args.VocabSize, new long[] { 2, 24 }, generator: generator);

        using var plain = ModelBuilder.Build(config, spec.Args, null);
        var converted = BitFlipConverter.Convert(plain, options);
        converted.Step.Value = 3;
        var logits = plain.call(inputs);
        var loss = nn.functional.cross_entropy(logits.view(-1, logits.shape[^1]), labels.view(-1));
        loss.backward();
        var expected = converted.Layers.Where(l => l.Layer.Rank > 0)
            .SelectMany(l => new[] { ($"{l.Name}.lora_A", l.Layer.LoraA!.grad!), ($"{l.Name}.lora_B", l.Layer.LoraB!.grad!) })
            .ToDictionary(x => x.Item1, x => x.Item2.to(ScalarType.Float32));

        using var fsdp = FsdpModel.Build(config, spec.Args, null, options, new SingleProcessCollectives(), ScalarType.Float32);
        fsdp.Converted.Step.Value = 3;
        double shardedLoss = fsdp.MicroBatch(inputs, labels, divisor: 1.0);

        Assert.Equal(loss.to(ScalarType.Float32).item<float>(), shardedLoss);
        Assert.Equal(plain.parameters().Sum(p => p.numel() * p.element_size()), fsdp.ParamBytesPerRank);
        int seen = 0;
        foreach (var unit in fsdp.Units)
            foreach (var m in unit.Lora.Members)
            {
                var actual = unit.GradShard.narrow(0, m.Offset, m.Numel).view(m.Shape);
                float diff = (actual - expected[m.Name]).abs().max().item<float>();
                Assert.True(diff == 0, $"gradient of {m.Name} differs by up to {diff}");
                seen++;
            }
        Assert.Equal(expected.Count, seen);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void The_memory_plan_counts_what_the_trainer_holds(int world)
    {
        var config = BfloraConfig.Load(RepoPaths.Of("configs", "debug.toml"), new[] { $"data.path=\"{RepoPaths.Of("data", "corpus")}\"" });
        var spec = ModelBuilder.Resolve(config);
        var plan = MemoryPlanner.Compute(spec.Args, PlanInputs.From(config, world));
        var options = new ConversionOptions(config.Bitflip.ToFlipSettings(), config.Lora.R, config.Lora.LoraAlpha,
            config.Bitflip.SkipPatterns, config.Training.Seed);
        if (world == 1)
        {
            using var session = Bflora.Training.TrainingSession.Open(config);
            Assert.Equal(plan.Params, session.ParamBytesPerRank);
            return;
        }
        // Building needs only the rank and world size; every rank's shards have the same size.
        using var fsdp = FsdpModel.Build(config, spec.Args, null, options, new LayoutOnly(world - 1, world), ScalarType.Float32);
        Assert.Equal(plan.Params, fsdp.ParamBytesPerRank);
        Assert.Equal(plan.GatheredBlock + plan.Prefetch, fsdp.GatherBufferBytes);
        Assert.Equal(plan.LoraMasterAndOptimizer, fsdp.Slots.Sum(s => 3 * s.Master.numel() * s.Master.element_size()));
    }

    /// <summary>A rank of a world that is never talked to: enough to lay out and load shards.</summary>
    private sealed class LayoutOnly(int rank, int world) : ICollectives
    {
        public int Rank => rank;
        public int WorldSize => world;
        public void AllGather(Tensor input, Tensor output) => throw new NotSupportedException();
        public IPendingCollective StartAllGather(Tensor input, Tensor output) => throw new NotSupportedException();
        public void ReduceScatter(Tensor input, Tensor output) => throw new NotSupportedException();
        public void AllReduce(Tensor tensor, ReduceOp op) => throw new NotSupportedException();
        public void Broadcast(Tensor tensor, int root) => throw new NotSupportedException();
        public void Barrier() => throw new NotSupportedException();
    }

    [Fact]
    public void Flat_layout_shards_cover_every_element_once()
    {
        var layout = new FlatLayout(new[] { ("a", new long[] { 3, 5 }), ("b", new long[] { 7 }), ("c", new long[] { 2, 2 }) }, world: 4);
        Assert.Equal(26, layout.Numel);
        Assert.Equal(7, layout.ShardNumel);   // ceil(26 / 4); the last shard ends in 2 padding elements
        var covered = new int[layout.PaddedNumel];
        for (int rank = 0; rank < 4; rank++)
            foreach (var m in layout.Members)
                if (layout.Overlap(m, rank) is (long from, long to, long count))
                    for (long i = 0; i < count; i++)
                    {
                        Assert.Equal(m.Offset + from + i, rank * layout.ShardNumel + to + i);
                        covered[m.Offset + from + i]++;
                    }
        Assert.All(covered.Take((int)layout.Numel), c => Assert.Equal(1, c));
        Assert.All(covered.Skip((int)layout.Numel), c => Assert.Equal(0, c));
    }
}
