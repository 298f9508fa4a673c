using Bflora.Bitflip;
using Bflora.Lora;
using Bflora.Tests.Bitflip;
using Xunit;
using static TorchSharp.torch;

namespace Bflora.Tests.Lora;

/// <summary>
/// The two forms of a drop record: the CPU engine's index list and the device kernels' byte per element (here from
/// the kernels run as host code), and the LoRA correction each one drives.
/// </summary>
public class DropRecordTests
{
    const long In = 70, Out = 90;
    const int R = 5;

    [Theory]
    [InlineData(FlipRng.Fast)]
    [InlineData(FlipRng.Philox)]
    public void Both_records_zero_exactly_the_straight_through_gradients_zeros(FlipRng rng)
    {
        using var scope = NewDisposeScope();
        using var gen = new Generator(8);
        var x = randn(new[] { 3L, 41, 57 }, generator: gen).to(ScalarType.BFloat16);
        var grad = randn(x.shape, generator: gen).to(ScalarType.BFloat16);
        var op = new FlipOp(4, 4, 21, 22, 1.5, rng);
        var expected = BitFlip.StraightThroughGradient(x, grad, op);

        var cpuFlipped = empty_like(x);
        var indices = BitFlip.FlipIntoWithDropRecord(x, cpuFlipped, op)!;
        var deviceFlipped = empty_like(x);
        var marks = EmulatedFlipLauncher.OnDevicePath(() => BitFlip.FlipIntoWithDropRecord(x, deviceFlipped, op))!;

        Assert.Equal(ScalarType.Int64, indices.dtype);
        Assert.Equal(ScalarType.Bool, marks.dtype);
        Assert.True(indices.numel() > 0);
        Assert.Equal(TensorBits.ReadWords(BitFlip.Flip(x, op)), TensorBits.ReadWords(cpuFlipped));
        Assert.Equal(TensorBits.ReadWords(cpuFlipped), TensorBits.ReadWords(deviceFlipped));
        Assert.Equal(TensorBits.ReadWords(expected), TensorBits.ReadWords(BitFlip.ZeroWhereDropped_(grad.clone(), indices)));
        Assert.Equal(TensorBits.ReadWords(expected), TensorBits.ReadWords(BitFlip.ZeroWhereDropped_(grad.clone(), marks)));
        foreach (var record in new[] { indices, marks })
        {
            using var inPlace = grad.clone();
            BitFlip.ZeroWhereDropped_(inPlace, record);
            Assert.Equal(TensorBits.ReadWords(expected), TensorBits.ReadWords(inPlace));
        }
        Assert.Null(BitFlip.FlipIntoWithDropRecord(x, cpuFlipped, op with { ZeroOutT = null }));
    }

    /// <summary>
    /// The kernel's correction against the one computed by hand in fp32 from the same (upcast) inputs, compared on
    /// the correction itself, not on the corrected gradient, so that leaving out one of 300 drops shows (about 6 %).
    /// 130 tokens: two whole chunks of 64 and a remainder; drops in the first and last mark group too.
    /// </summary>
    [Theory]
    [InlineData(ScalarType.BFloat16)]
    [InlineData(ScalarType.Float16)]
    [InlineData(ScalarType.Float32)]
    public void The_kernel_correction_from_marks_removes_the_dropped_positions_gradient(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        using var gen = new Generator(4);
        Tensor Rand(params long[] shape) => randn(shape, generator: gen).to(dtype);
        var (g, x2, a, b) = (Rand(130, Out), Rand(130, In), Rand(R, In), Rand(Out, R));
        var gradA = randn(new[] { (long)R, In }, generator: gen);
        var gradB = randn(new[] { Out, (long)R }, generator: gen);
        var dropped = cat(new[] { tensor(new long[] { 0, Out * In - 1 }),
            randperm(Out * In - 2, generator: gen).narrow(0, 0, 298).add(1) });
        var marks = zeros(Out * In, ScalarType.Bool).index_fill_(0, dropped, true).view(Out, In);
        const double s = 1.75;

        var (fixA, fixB) = FlipSelfTest.LoraCorrectionByHand(g, x2, a, b, dropped, s);

        var (newA, newB) = EmulatedFlipLauncher.OnDevicePath(() => LoraFlipFunction.Correct(gradA, gradB, g, x2, a, b, marks, s));
        Assert.Equal(ScalarType.Float32, newA.dtype);
        AssertClose(fixA, newA - gradA, "dA");
        AssertClose(fixB, newB - gradB, "dB");

        // The CPU engine's index-list path sums in fp32 too.
        var (listA, listB) = LoraFlipFunction.CorrectAt(gradA, gradB, g, x2, a, b, dropped.sort().Values, s);
        AssertClose(fixA, listA - gradA, "dA from the index list");
        AssertClose(fixB, listB - gradB, "dB from the index list");
    }

    [Fact]
    public void Marks_with_no_drop_leave_the_gradients_as_they_are()
    {
        using var scope = NewDisposeScope();
        using var gen = new Generator(6);
        var (g, x2) = (randn(new[] { 20L, Out }, generator: gen), randn(new[] { 20L, In }, generator: gen));
        var (a, b) = (randn(new[] { (long)R, In }, generator: gen), randn(new[] { Out, (long)R }, generator: gen));
        var (gradA, gradB) = (randn(new[] { (long)R, In }, generator: gen), randn(new[] { Out, (long)R }, generator: gen));
        var (newA, newB) = EmulatedFlipLauncher.OnDevicePath(() =>
            LoraFlipFunction.Correct(gradA, gradB, g, x2, a, b, zeros(new[] { Out, In }, ScalarType.Bool), 2.0));
        Assert.Equal(TensorBits.ReadWords(gradA), TensorBits.ReadWords(newA));
        Assert.Equal(TensorBits.ReadWords(gradB), TensorBits.ReadWords(newB));
    }

    [Fact]
    public void The_gpu_self_test_passes_through_the_emulated_kernels_and_checks_the_correction()
    {
        var log = new StringWriter();
        Assert.True(EmulatedFlipLauncher.OnDevicePath(() => FlipSelfTest.Run(CPU, log)), log.ToString());
        Assert.Contains("PASS lora_drop_correction", log.ToString());
        Assert.Contains("PASS drop_record_gradient Fast", log.ToString());
    }

    static void AssertClose(Tensor expected, Tensor actual, string what)
    {
        double err = (actual - expected).norm().item<float>(), scale = expected.norm().item<float>();
        Assert.True(scale > 0, $"{what}: the correction is zero, the case tests nothing");
        Assert.True(err <= 1e-5 * scale, $"{what}: relative error {err / scale:G3} of the correction exceeds fp32 rounding");
    }
}
