using Bflora.Bitflip;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Bflora.Tests.Bitflip;

public class ZeroOutAndAutogradTests
{
    static readonly float[] Values =
        { 0.5f, -0.5f, 2f, -2f, 1.99f, -1.99f, 3f, 1e30f, float.NaN, float.PositiveInfinity, float.NegativeInfinity, -0f, 0f };

    [Theory]
    [InlineData(ScalarType.BFloat16)]
    [InlineData(ScalarType.Float16)]
    [InlineData(ScalarType.Float32)]
    public void Values_at_or_above_t_and_non_finite_become_plus_zero(ScalarType dtype)
    {
        using var scope = torch.NewDisposeScope();
        var x = torch.tensor(Values).to(dtype);
        var op = new FlipOp(null, null, 0, 0, 2.0);
        var y = BitFlip.Flip(x, op);
        var words = TensorBits.ReadWords(y);
        var input = TensorBits.ReadWords(x);
        for (int i = 0; i < Values.Length; i++)
        {
            float v = FlipFormats.ToSingle(FlipFormats.Of(dtype), input[i]);
            bool kept = Math.Abs(v) < 2f;
            Assert.Equal(kept ? input[i] : 0u, words[i]);
        }
        Assert.Equal(new[] { true, true, false, false, true, true, false, false, false, false, false, true, true },
            input.Select(w => Math.Abs(FlipFormats.ToSingle(FlipFormats.Of(dtype), w)) < 2f).ToArray());
        Assert.Equal(words, ReferenceFlip.Apply(input, FlipFormats.Of(dtype), op));
    }

    [Fact]
    public void Zero_out_only_gradient_is_zero_exactly_where_zeroed()
    {
        using var scope = torch.NewDisposeScope();
        var x = torch.tensor(Values).to(ScalarType.BFloat16).requires_grad_(true);
        var y = BitFlipFunction.Apply(x, new FlipOp(null, null, 0, 0, 2.0));
        var upstream = torch.arange(1, Values.Length + 1, ScalarType.BFloat16);
        (y * upstream).sum().backward();
        var expected = Values.Select((v, i) => Math.Abs(v) < 2f ? i + 1f : 0f).ToArray();
        Assert.Equal(expected, x.grad!.to(ScalarType.Float32).data<float>().ToArray());
    }

    [Theory]
    [InlineData(FlipRng.Fast)]
    [InlineData(FlipRng.Philox)]
    public void Straight_through_gradient_masked_by_the_recomputed_zero_out(FlipRng rng)
    {
        using var scope = torch.NewDisposeScope();
        var words = FlipKernelTests.RandomWords(FlipFormat.BFloat16, 3000, 11);
        var x0 = TensorBits.FromWords(words, new long[] { 30, 100 }, FlipFormat.BFloat16);
        var op = new FlipOp(2, 3, 5, 6, 4.0, rng);
        // By hand: flip without zero-out by the reference, keep where |y| < 4 in fp32.
        var unzeroed = ReferenceFlip.Apply(words, FlipFormat.BFloat16, op.WithoutZeroOut());
        var keep = unzeroed.Select(w => Math.Abs(FlipFormats.ToSingle(FlipFormat.BFloat16, w)) < 4f).ToArray();
        Assert.Contains(true, keep);
        Assert.Contains(false, keep);

        var upstream = torch.randn(new long[] { 30, 100 }, ScalarType.Float32).to(ScalarType.BFloat16);
        var up = TensorBits.ReadWords(upstream);
        var expectedGrad = up.Select((w, i) => keep[i] ? w : 0u).ToArray();
        for (int run = 0; run < 2; run++)
        {
            var x = x0.clone().requires_grad_(true);
            var y = BitFlipFunction.Apply(x, op);
            Assert.Equal(ReferenceFlip.Apply(words, FlipFormat.BFloat16, op), TensorBits.ReadWords(y));
            y.backward(new[] { upstream });
            Assert.Equal(expectedGrad, TensorBits.ReadWords(x.grad!));
        }
    }

    [Fact]
    public void Without_zero_out_gradient_is_copied_even_through_inf()
    {
        using var scope = torch.NewDisposeScope();
        var x = torch.ones(4096, ScalarType.BFloat16).requires_grad_(true);
        var y = BitFlipFunction.Apply(x, new FlipOp(1, null, 3, 4, null));
        Assert.True(torch.isinf(y).any().item<bool>() || torch.isnan(y).any().item<bool>());
        var upstream = torch.rand(4096, ScalarType.Float32).to(ScalarType.BFloat16);
        y.backward(new[] { upstream });
        Assert.Equal(TensorBits.ReadWords(upstream), TensorBits.ReadWords(x.grad!));
    }

    [Theory]
    [InlineData(ScalarType.Float32, FlipRng.Fast)]
    [InlineData(ScalarType.Float16, FlipRng.Philox)]
    public void Gradient_of_a_shard_uses_its_global_indices(ScalarType dtype, FlipRng rng)
    {
        using var scope = torch.NewDisposeScope();
        var x = torch.randn(200000, ScalarType.Float32).mul_(3).to(dtype);
        var grad = torch.randn(200000, ScalarType.Float32).to(dtype);
        var op = new FlipOp(2, 4, 8, 9, 2.5, rng);
        var whole = BitFlip.StraightThroughGradient(x, grad, op);
        var shard = BitFlip.StraightThroughGradient(x.slice(0, 70000, 150000, 1), grad.slice(0, 70000, 150000, 1), op,
            indexOffset: 70000, maxThreads: 3);
        Assert.Equal(TensorBits.ReadWords(whole)[70000..150000], TensorBits.ReadWords(shard));
        Assert.Throws<ArgumentException>(() => BitFlip.StraightThroughGradient(x, grad.@double(), op));
    }
}
