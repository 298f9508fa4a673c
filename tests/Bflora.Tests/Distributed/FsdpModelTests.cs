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
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Sharded_machinery_at_one_rank_matches_the_plain_model_bit_for_bit(bool checkpointing)
    {
        // No skip pattern: the output head is converted too (LoRA and flips), so it is gathered whole like a block and
        // every operation is the plain model's, whether blocks are recomputed in backward or their graphs kept.
        var (loss, shardedLoss, diffs) = Compare("bitflip.skip_patterns=[]",
            $"parallelism.activation_checkpointing={(checkpointing ? "true" : "false")}");
        Assert.Equal(loss, shardedLoss);
        Assert.All(diffs, d => Assert.True(d.Relative == 0, $"gradient of {d.Name} differs ({d.Relative})"));
    }

    [Fact]
    public void Vocab_parallel_head_at_one_rank_matches_the_plain_model_within_bf16()
    {
        // The configs' skip_patterns = ["output"]: embedding lookup and cross-entropy go vocabulary-parallel, with the
        // log-sum-exp in fp32 instead of the bf16 cross-entropy, so the loss and gradients agree to bf16 precision.
        var (loss, shardedLoss, diffs) = Compare();
        Assert.True(Math.Abs(loss - shardedLoss) <= 0.02, $"{loss} vs {shardedLoss}");
        Assert.All(diffs, d => Assert.True(d.Relative < 0.02, $"gradient of {d.Name} differs ({d.Relative})"));
    }

    /// <summary>One micro-batch through the plain model and through FsdpModel at N = 1: losses and the relative
    /// difference of every LoRA gradient. Flips at 0.5^7 per bit so they matter; step 3 so the seeds are not step 0's.</summary>
    private static (double Loss, double ShardedLoss, List<(string Name, double Relative)> Diffs) Compare(params string[] extra)
    {
        var config = BfloraConfig.Load(RepoPaths.Of("configs", "debug.toml"), new[]
        {
            "bitflip.w_p_exp=0.0078125", "bitflip.x_p_exp=0.0078125", "bitflip.w_p_frac=0.0078125", "bitflip.x_p_frac=0.0078125",
        }.Concat(extra));
        var spec = ModelBuilder.Resolve(config);
        var options = new ConversionOptions(config.Bitflip.ToFlipSettings(), config.Lora.R, config.Lora.LoraAlpha,
            config.Bitflip.SkipPatterns, config.Training.Seed);
        using var scope = NewDisposeScope();
        using var generator = new TorchSharp.torch.Generator(7);
        var inputs = randint(0, spec.Args.VocabSize, new long[] { 2, 24 }, generator: generator);
        var labels = randint(0, spec.Args.VocabSize, new long[] { 2, 24 }, generator: generator);

        using var plain = ModelBuilder.Build(config, spec.Args, null);
        var converted = BitFlipConverter.Convert(plain, options);
        converted.Step.Value = 3;
        var logits = plain.call(inputs);
        var loss = Bflora.Training.TrainLoss.CrossEntropy(logits, labels);
        loss.backward();
        var expected = converted.Layers.Where(l => l.Layer.Rank > 0)
            .SelectMany(l => new[] { ($"{l.Name}.lora_A", l.Layer.LoraA!.grad!), ($"{l.Name}.lora_B", l.Layer.LoraB!.grad!) })
            .ToDictionary(x => x.Item1, x => x.Item2.to(ScalarType.Float32));

        using var fsdp = FsdpModel.Build(config, spec.Args, null, options, new SingleProcessCollectives(), ScalarType.Float32);
        fsdp.Converted.Step.Value = 3;
        double shardedLoss = fsdp.MicroBatch(inputs, labels, divisor: 1.0);
        Assert.Equal(plain.parameters().Sum(p => p.numel() * p.element_size()), fsdp.ParamBytesPerRank);

        var diffs = new List<(string, double)>();
        foreach (var unit in fsdp.Units)
            foreach (var m in unit.Lora.Members)
            {
                var actual = unit.GradShard.narrow(0, m.Offset, m.Numel).view(m.Shape);
                var want = expected[m.Name];
                diffs.Add((m.Name, (actual - want).norm().item<float>() / Math.Max(want.norm().item<float>(), 1e-30)));
            }
        Assert.Equal(expected.Count, diffs.Count);
        return (loss.to(ScalarType.Float32).item<float>(), shardedLoss, diffs);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(1, "full")]
    [InlineData(2, "full")]
    [InlineData(3, "full")]
    public void The_memory_plan_counts_what_the_trainer_holds(int world, string trainable = "lora")
    {
        var config = BfloraConfig.Load(RepoPaths.Of("configs", "debug.toml"),
            new[] { $"data.path=\"{RepoPaths.Of("data", "corpus")}\"", $"training.trainable=\"{trainable}\"" });
        var spec = ModelBuilder.Resolve(config);
        var plan = MemoryPlanner.Compute(spec.Args, PlanInputs.From(config, world));
        bool full = trainable == "full";
        var options = new ConversionOptions(config.Bitflip.ToFlipSettings(), full ? 0 : config.Lora.R, config.Lora.LoraAlpha,
            config.Bitflip.SkipPatterns, config.Training.Seed);
        if (world == 1)
        {
            using var session = Bflora.Training.TrainingSession.Open(config);
            Assert.Equal(plan.Params, session.ParamBytesPerRank);
            return;
        }
        // Building needs only the rank and world size; every rank's shards have the same size.
        using var fsdp = FsdpModel.Build(config, spec.Args, null, options, new LayoutOnly(world - 1, world), ScalarType.Float32,
            fullTraining: full);
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
