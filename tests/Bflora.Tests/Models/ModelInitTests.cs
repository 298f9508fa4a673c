using Bflora.Models.Llama3;
using Xunit;
using static TorchSharp.torch;

namespace Bflora.Tests.Models;

public class ModelInitTests
{
    [Fact]
    public void Random_init_has_torchtitan_scales_and_is_seeded_per_parameter()
    {
        using var scope = NewDisposeScope();
        var args = ModelTestKit.Tiny with { Dim = 256, FfnHidden = 512, NHeads = 8, NKvHeads = 4 };
        double Std(Tensor t) => t.@float().std().item<float>();
        double MaxAbs(Tensor t) => t.@float().abs().max().item<float>();

        var wq = ModelInit.RandomParameter(args, "layers.0.attention.wq.weight", new long[] { 256, 256 }, 3, ScalarType.BFloat16);
        Assert.InRange(Std(wq), 0.02 * 0.95, 0.02 * 1.0);  // a ±3σ truncation shrinks σ by 1.3 %
        Assert.True(MaxAbs(wq) <= 0.0601, "truncated at 3 standard deviations");
        var wo = ModelInit.RandomParameter(args, "layers.1.attention.wo.weight", new long[] { 256, 256 }, 3, ScalarType.BFloat16);
        Assert.InRange(Std(wo), 0.95 * 0.01, 1.0 * 0.01);   // 0.02 / √(2·2)
        var emb = ModelInit.RandomParameter(args, "tok_embeddings.weight", new long[] { 50, 256 }, 3, ScalarType.BFloat16);
        Assert.InRange(Std(emb), 0.95, 1.05);
        var tied = ModelInit.RandomParameter(args with { TieEmbeddings = true }, "tok_embeddings.weight", new long[] { 50, 256 }, 3, ScalarType.BFloat16);
        Assert.InRange(Std(tied), 0.95 / 16, 1.05 / 16);   // tied: the output head's 1/√dim
        var norm = ModelInit.RandomParameter(args, "norm.weight", new long[] { 256 }, 3, ScalarType.BFloat16);
        Assert.Equal(1f, norm.@float().min().item<float>());

        var again = ModelInit.RandomParameter(args, "layers.0.attention.wq.weight", new long[] { 256, 256 }, 3, ScalarType.BFloat16);
        Assert.True(wq.equal(again).all().item<bool>(), "same seed and name → same values");
        var embAgain = ModelInit.RandomParameter(args, "tok_embeddings.weight", new long[] { 50, 256 }, 3, ScalarType.BFloat16);
        Assert.True(emb.equal(embAgain).all().item<bool>(), "the embedding is seeded too");
        var other = ModelInit.RandomParameter(args, "layers.0.attention.wk.weight", new long[] { 256, 256 }, 3, ScalarType.BFloat16);
        Assert.False(wq.equal(other).all().item<bool>(), "another name → other values");
    }

    [Fact]
    public void A_slice_of_the_random_init_is_that_part_of_the_whole_for_any_cut()
    {
        using var scope = NewDisposeScope();
        var args = ModelTestKit.Tiny;
        const string name = "layers.0.feed_forward.w2.weight";
        long[] shape = { 3, 1_000_001 };   // three seeded chunks, the last one partial
        var whole = ModelInit.RandomParameter(args, name, shape, 5, ScalarType.BFloat16).reshape(-1);
        long c = ModelInit.InitChunk;
        foreach (var (from, count) in new[] { (0L, 5L), (c - 7, 20L), (c + 3, c + 100_000), (3_000_003L - 9, 9L) })
        {
            var part = empty(count, dtype: ScalarType.BFloat16);
            ModelInit.RandomSlice(args, name, 5, from, part);
            Assert.True(whole.narrow(0, from, count).equal(part).all().item<bool>(), $"slice [{from}, +{count})");
        }
        Assert.False(whole.narrow(0, 0, 64).equal(whole.narrow(0, c, 64)).all().item<bool>(), "chunks draw different streams");
    }
}
