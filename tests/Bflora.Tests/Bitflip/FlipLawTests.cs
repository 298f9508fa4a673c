using Bflora.Bitflip;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Bflora.Tests.Bitflip;

/// <summary>Both generators must follow the law: each mask bit independently 1 with probability 0.5^n.</summary>
public class FlipLawTests
{
    /// <summary>Flip bits of zeros of one dtype with both components on, then count per bit position of the word.</summary>
    static long[] PerBitCounts(FlipRng rng, int halves, int elements, int seed, ScalarType dtype)
    {
        using var scope = torch.NewDisposeScope();
        var words = TensorBits.ReadWords(BitFlip.Flip(torch.zeros(elements, dtype),
            new FlipOp(halves, halves, seed, seed + 1, null, rng)));
        var counts = new long[dtype == ScalarType.Float32 ? 32 : 16];
        foreach (uint w in words)
            for (int b = 0; b < counts.Length; b++) counts[b] += w >> b & 1;
        return counts;
    }

    /// <summary>
    /// Every bit position of the word is a mask bit (exp = sign + exponent, frac = mantissa), so each must flip at
    /// 0.5^n, within 5σ; so must their total, whose σ is small enough to tell 0.5^16 from 0.5^17 (at n = 16 one bit's
    /// count of ~64 could not). The three dtypes lay their mask bits out differently in the fast generator's bit space.
    /// </summary>
    [Theory]
    [InlineData(FlipRng.Fast, 1, 1 << 20, ScalarType.BFloat16)]
    [InlineData(FlipRng.Fast, 4, 1 << 20, ScalarType.BFloat16)]
    [InlineData(FlipRng.Fast, 12, 1 << 22, ScalarType.BFloat16)]
    [InlineData(FlipRng.Fast, 16, 1 << 22, ScalarType.BFloat16)]
    [InlineData(FlipRng.Fast, 4, 1 << 19, ScalarType.Float16)]
    [InlineData(FlipRng.Fast, 4, 1 << 19, ScalarType.Float32)]
    [InlineData(FlipRng.Philox, 1, 1 << 20, ScalarType.BFloat16)]
    [InlineData(FlipRng.Philox, 4, 1 << 20, ScalarType.BFloat16)]
    [InlineData(FlipRng.Philox, 12, 1 << 22, ScalarType.BFloat16)]
    [InlineData(FlipRng.Philox, 16, 1 << 22, ScalarType.BFloat16)]
    [InlineData(FlipRng.Philox, 4, 1 << 19, ScalarType.Float16)]
    [InlineData(FlipRng.Philox, 4, 1 << 19, ScalarType.Float32)]
    public void Per_bit_flip_rate_is_half_to_the_n(FlipRng rng, int halves, int elements, ScalarType dtype)
    {
        double p = Math.ScaleB(1.0, -halves);
        double sigma = Math.Sqrt(elements * p * (1 - p));
        var counts = PerBitCounts(rng, halves, elements, 777, dtype);
        for (int b = 0; b < counts.Length; b++)
            Assert.True(Math.Abs(counts[b] - elements * p) < 5 * sigma,
                $"bit {b}: {counts[b]} flips, expected {elements * p:F1} ± {sigma:F1}");
        double trials = (double)elements * counts.Length, totalSigma = Math.Sqrt(trials * p * (1 - p));
        Assert.True(Math.Abs(counts.Sum() - trials * p) < 5 * totalSigma,
            $"all bits: {counts.Sum()} flips, expected {trials * p:F1} ± {totalSigma:F1}");
    }

    [Theory]
    [InlineData(FlipRng.Fast, ScalarType.BFloat16)]
    [InlineData(FlipRng.Fast, ScalarType.Float32)]
    [InlineData(FlipRng.Philox, ScalarType.BFloat16)]
    [InlineData(FlipRng.Philox, ScalarType.Float32)]
    public void At_p_1_every_bit_flips(FlipRng rng, ScalarType dtype)
    {
        Assert.Equal(0, FlipProbability.Halves(1.0));
        const int elements = 70001;   // more than one fast-generator block
        Assert.All(PerBitCounts(rng, 0, elements, 5, dtype), count => Assert.Equal(elements, count));
    }

    /// <summary>
    /// Joint flips of two bits, within one element and across neighbouring elements, must occur at rate p², as
    /// for independent bits. Float32 frac has 23 positions, so the fast generator's gaps cross element borders often.
    /// </summary>
    [Theory]
    [InlineData(FlipRng.Fast)]
    [InlineData(FlipRng.Philox)]
    public void Bits_within_and_across_elements_are_uncorrelated(FlipRng rng)
    {
        using var scope = torch.NewDisposeScope();
        const int elements = 1 << 20;
        const int halves = 2;
        double p = 0.25;
        var words = TensorBits.ReadWords(BitFlip.Flip(torch.zeros(elements, ScalarType.Float32),
            new FlipOp(halves, halves, 99, 100, null, rng)));
        (string Name, Func<int, bool> Both)[] pairs =
        {
            ("frac bits 0,1 same element", i => (words[i] & 3u) == 3u),
            ("frac bit 22, exp bit 23 same element", i => (words[i] >> 22 & 3u) == 3u),
            ("frac bits 3,19 same element", i => (words[i] >> 3 & 1u) == 1 && (words[i] >> 19 & 1u) == 1),
            ("bit 22 here, bit 0 in next", i => (words[i] >> 22 & 1u) == 1 && (words[i + 1] & 1u) == 1),
            ("bit 5 here and in next", i => (words[i] >> 5 & 1u) == 1 && (words[i + 1] >> 5 & 1u) == 1),
            ("sign here and in next", i => (words[i] >> 31) == 1 && (words[i + 1] >> 31) == 1),
        };
        int trials = elements - 1;
        double expected = trials * p * p, sigma = Math.Sqrt(trials * p * p * (1 - p * p));
        foreach (var (name, both) in pairs)
        {
            int joint = 0;
            for (int i = 0; i < trials; i++) if (both(i)) joint++;
            Assert.True(Math.Abs(joint - expected) < 5 * sigma, $"{name}: {joint}, expected {expected:F0} ± {sigma:F0}");
        }
    }

    [Theory]
    [InlineData(FlipRng.Fast)]
    [InlineData(FlipRng.Philox)]
    public void Different_seeds_give_different_masks(FlipRng rng)
    {
        using var scope = torch.NewDisposeScope();
        var zeros = torch.zeros(1 << 16, ScalarType.BFloat16);
        uint[] Masks(int seed) => TensorBits.ReadWords(BitFlip.Flip(zeros, new FlipOp(4, 4, seed, seed + 10, null, rng)));
        var a = Masks(1);
        var b = Masks(2);
        Assert.Equal(a, Masks(1));
        int differing = a.Zip(b).Count(t => t.First != t.Second);
        // Two independent masks with ~1 bit in 16 set per 16-bit word agree on roughly a third of words.
        Assert.True(differing > a.Length / 2, $"only {differing} of {a.Length} words differ");
    }
}
