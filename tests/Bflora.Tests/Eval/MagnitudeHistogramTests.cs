using Bflora.Bitflip;
using Bflora.Eval;
using Xunit;
using static TorchSharp.torch;

namespace Bflora.Tests.Eval;

public sealed class MagnitudeHistogramTests
{
    private static Tensor Bf16(IEnumerable<ushort> bits)
    {
        var words = bits.Select(b => (uint)b).ToArray();
        return TensorBits.FromWords(words, [words.LongLength], FlipFormat.BFloat16);
    }

    private static float Value(int bits) => BitConverter.Int32BitsToSingle(bits << 16);

    [Fact]
    public void ThousandDistinctValuesGiveTheirNearestRankPercentilesExactly()
    {
        // The 1000 consecutive bf16 values from 1.0 up (bits 0x3F80 + i), shuffled, every other one negated.
        var order = Enumerable.Range(0, 1000).OrderBy(i => (i * 7919) % 1000).ToArray();
        using var t = Bf16(order.Select(i => (ushort)((0x3F80 + i) | (i % 2 == 0 ? 0x8000 : 0))));
        var h = new MagnitudeHistogram();
        Assert.Equal(0x3F80 + 999, h.AddTensor(t));
        Assert.Equal(1000, h.Count);
        Assert.Equal(Value(0x3F80 + 499), h.Percentile(0.5));    // rank 500
        Assert.Equal(Value(0x3F80 + 989), h.Percentile(0.99));   // rank 990
        Assert.Equal(Value(0x3F80 + 998), h.Percentile(0.999));  // rank 999
        Assert.Equal(Value(0x3F80 + 999), h.Percentile(0.9999)); // rank ceil(999.9) = 1000
        Assert.Equal(Value(0x3F80 + 999), h.Max);
        Assert.Equal(Value(0x3F80), h.Percentile(0.0001));
    }

    [Fact]
    public void NanCountsAsZeroInfAsTwoToTheFortyAndSignIsDropped()
    {
        using var t = tensor(new[] { -3f, float.NaN, float.PositiveInfinity, float.NegativeInfinity, 0f, -0f, 2f })
            .to(ScalarType.BFloat16);
        var h = new MagnitudeHistogram();
        h.AddTensor(t);
        Assert.Equal(3, h.CountOf(0));
        Assert.Equal(2, h.CountOf(MagnitudeHistogram.InfBin));
        Assert.Equal(MathF.Pow(2, 40), MagnitudeHistogram.ValueOf(MagnitudeHistogram.InfBin));
        Assert.Equal(2f, h.Percentile(0.5)); // sorted: 0 0 0 2 3 2^40 2^40, rank 4
        Assert.Equal(3f, h.Percentile(5.0 / 7));
        Assert.Equal(MathF.Pow(2, 40), h.Max);
        Assert.Equal(MathF.Pow(2, 40), h.Percentile(0.99));
    }

    [Fact]
    public void Fp32InputIsRoundedToBf16First()
    {
        // bf16 steps are 2^-7 at 1: 1 + 2^-9 is a quarter step (rounds down), 1 + 3·2^-9 three quarters (rounds up).
        using var t = tensor(new[] { 1f + MathF.Pow(2, -9), 1f + 3 * MathF.Pow(2, -9), -5f });
        var h = new MagnitudeHistogram();
        h.AddTensor(t);
        Assert.Equal(1, h.CountOf(0x3F80));           // 1.0
        Assert.Equal(1, h.CountOf(0x3F81));           // 1 + 2^-7 (1 + 3·2^-9 rounds up)
        Assert.Equal(5f, h.Max);
    }

    [Fact]
    public void MergedHistogramsEqualTheHistogramOfTheConcatenationAndTheParallelPathIsExact()
    {
        // Large enough for the chunked multi-thread path; the reference is a plain loop over the raw words.
        using var g = new Generator(11);
        using var a = (randn([1_500_000], generator: g) * 50).to(ScalarType.BFloat16);
        using var b = randn([300_001], generator: g).to(ScalarType.BFloat16);
        b[17] = tensor(float.NaN).to(ScalarType.BFloat16);
        using var both = cat([a, b]);
        var ha = new MagnitudeHistogram();
        var hb = new MagnitudeHistogram();
        var hBoth = new MagnitudeHistogram();
        ha.AddTensor(a);
        hb.AddTensor(b);
        ushort maxBoth = hBoth.AddTensor(both);
        ha.Add(hb);

        var reference = new long[MagnitudeHistogram.Bins];
        foreach (uint w in TensorBits.ReadWords(both)) reference[MagnitudeHistogram.BinOf((ushort)w)]++;
        Assert.Equal(both.numel(), ha.Count);
        Assert.Equal(hBoth.Count, ha.Count);
        for (int bin = 0; bin < MagnitudeHistogram.Bins; bin++)
        {
            Assert.Equal(reference[bin], hBoth.CountOf((ushort)bin));
            Assert.Equal(reference[bin], ha.CountOf((ushort)bin));
        }
        int highest = Array.FindLastIndex(reference, c => c != 0);
        Assert.Equal(MagnitudeHistogram.ValueOf((ushort)highest), hBoth.Max);
        Assert.Equal((float)a.abs().max().@float().item<float>(), ha.Max); // b's NaN counts as 0, a dominates
        Assert.Equal(hBoth.Max, MagnitudeHistogram.ValueOf(maxBoth));
    }

    [Fact]
    public void DeviceCountsEqualTheWordLoopOnEveryBf16PatternAndOnRoundedFp32()
    {
        var log = new StringWriter();
        Assert.True(ProfileSelfTest.Run(CPU, log), log.ToString());
        Assert.StartsWith("PASS profile_histogram CPU: 277881 of 277881 values counted, 0 bins differ", log.ToString());
    }

    [Fact]
    public void MovingDeviceCountsEmptiesThemAndAnEmptyTensorCountsNothing()
    {
        using var counts = new DeviceBinCounts(CPU);
        using var t = tensor(new[] { -3f, 0.5f, float.PositiveInfinity }).to(ScalarType.BFloat16);
        counts.Add(t);
        counts.Add(empty(0));
        var h = new MagnitudeHistogram();
        Assert.Equal(MagnitudeHistogram.InfBin, counts.MoveInto(h));
        Assert.Equal(0, counts.MoveInto(h));
        Assert.Equal(3, h.Count);
        Assert.Equal(1, h.CountOf(MagnitudeHistogram.InfBin));
        Assert.Equal(MathF.Pow(2, 40), h.Max);
    }

    [Theory]
    [InlineData(126.5, 256)]   // the original's logged 70B weight max
    [InlineData(3680, 8192)]   // the original's logged 70B activation max
    [InlineData(128, 256)]     // a power of two: ceil(log2 128 + 1) = 8, so twice the max
    [InlineData(129, 512)]
    [InlineData(1, 2)]
    [InlineData(0.75, 2)]
    [InlineData(0, 1.0 / (1 << 28))] // max(0, 1e-9): ceil(log2 1e-9 + 1) = -28
    public void SuggestedThresholdIsTwoToTheCeilOfLog2MaxPlusOne(double max, double expected) =>
        Assert.Equal(expected, ProfileRun.SuggestedThreshold(max));
}
