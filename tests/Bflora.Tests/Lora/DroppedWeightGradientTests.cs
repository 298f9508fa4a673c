using Bflora.Bitflip;
using Bflora.Lora;
using Xunit;
using static TorchSharp.torch;

namespace Bflora.Tests.Lora;

/// <summary>
/// The weight gradient at dropped positions: the vectorised dot products over transposed copies against the plain
/// loop over the columns in place, bit for bit, and both against gᵀx_f formed whole in fp32.
/// </summary>
public class DroppedWeightGradientTests
{
    const long Out = 90, In = 70;

    /// <summary>
    /// 133 tokens: sixteen whole vectors of eight and a remainder of five, so the lanes' tail is summed too. 400 drops,
    /// the first and the last position among them.
    /// </summary>
    [Theory]
    [InlineData(ScalarType.BFloat16, 133)]
    [InlineData(ScalarType.Float16, 133)]
    [InlineData(ScalarType.Float32, 133)]
    [InlineData(ScalarType.BFloat16, 8)]
    [InlineData(ScalarType.BFloat16, 3)]
    public void Both_ways_give_the_same_bits_and_the_fp32_weight_gradient(ScalarType dtype, long tokens)
    {
        using var scope = NewDisposeScope();
        using var gen = new Generator(11);
        var g = randn(new[] { tokens, Out }, generator: gen).to(dtype);
        var x2 = randn(new[] { tokens, In }, generator: gen).to(dtype);
        var dropped = cat(new[] { tensor(new long[] { 0, Out * In - 1 }),
            randperm(Out * In - 2, generator: gen).narrow(0, 0, 398).add(1) }).sort().Values;

        var transposed = DroppedWeightGradient.AtDrops(g, x2, dropped, transposed: true);
        var inPlace = DroppedWeightGradient.AtDrops(g, x2, dropped, transposed: false);
        Assert.Equal(TensorBits.ReadWords(inPlace), TensorBits.ReadWords(transposed));

        var whole = g.@float().t().matmul(x2.@float()).view(-1).index_select(0, dropped);
        double err = (transposed - whole).norm().item<float>(), scale = whole.norm().item<float>();
        Assert.True(err <= 1e-5 * scale, $"relative error {err / scale:G3} of G exceeds fp32 rounding");
    }

    [Fact]
    public void The_thread_count_and_the_drop_count_do_not_change_a_bit()
    {
        using var scope = NewDisposeScope();
        using var gen = new Generator(12);
        var g = randn(new[] { 300L, Out }, generator: gen).to(ScalarType.BFloat16);
        var x2 = randn(new[] { 300L, In }, generator: gen).to(ScalarType.BFloat16);
        var many = randperm(Out * In, generator: gen).narrow(0, 0, 2000).sort().Values;
        var few = many.narrow(0, 0, 10);

        var manyTwoThreads = DroppedWeightGradient.AtDrops(g, x2, many, maxThreads: 2);
        var manyOneThread = DroppedWeightGradient.AtDrops(g, x2, many, maxThreads: 1);
        Assert.Equal(TensorBits.ReadWords(manyOneThread), TensorBits.ReadWords(manyTwoThreads));
        // Ten drops are read in place, two thousand through the copies: the first ten agree all the same.
        var fewAlone = DroppedWeightGradient.AtDrops(g, x2, few);
        Assert.Equal(TensorBits.ReadWords(manyTwoThreads.narrow(0, 0, 10)), TensorBits.ReadWords(fewAlone));
    }

    [Fact]
    public void No_drop_gives_an_empty_result_and_mixed_dtypes_are_refused()
    {
        using var scope = NewDisposeScope();
        var g = randn(5, Out).to(ScalarType.BFloat16);
        var x2 = randn(5, In).to(ScalarType.BFloat16);
        Assert.Equal(0, DroppedWeightGradient.AtDrops(g, x2, empty(0, ScalarType.Int64)).numel());
        Assert.Throws<ArgumentException>(() => DroppedWeightGradient.AtDrops(g, x2.@float(), tensor(new long[] { 3 })));
    }
}
