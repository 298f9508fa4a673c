using Bflora.Bitflip;
using Bflora.Bitflip.Cuda;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Bflora.Tests.Bitflip;

/// <summary>
/// The GPU path (flip_kernels.cu and the steps of DeviceFlip around it) held to the reference bit for bit, with the
/// kernels run as host code on CPU tensors: only NVRTC and the launch itself are left to the GPU self-test.
/// </summary>
public class DeviceFlipTests
{
    static IFlipKernelLauncher Kernels => EmulatedFlipLauncher.Instance;

    public static IEnumerable<object[]> Cases()
    {
        foreach (var rng in new[] { FlipRng.Fast, FlipRng.Philox })
        foreach (var fmt in new[] { FlipFormat.BFloat16, FlipFormat.Float16, FlipFormat.Float32 })
        foreach (var (ne, nf) in new (int?, int?)[] { (3, 5), (0, null), (null, 1), (16, 13), (7, 7) })
            yield return new object[] { rng, fmt, ne, nf };
    }

    /// <summary>Offsets that start mid-block, odd (a 16-bit word in the high half of a 32-bit one), and past 2^32.</summary>
    static readonly long[] Offsets = { 0, 65_535, 70_001, (1L << 32) + 3 };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Device_kernels_equal_the_reference(FlipRng rng, FlipFormat fmt, int? ne, int? nf)
    {
        using var scope = torch.NewDisposeScope();
        const int size = 70_001;
        var words = FlipKernelTests.RandomWords(fmt, size, size + (ne ?? 0));
        var x = TensorBits.FromWords(words, new long[] { size }, fmt);
        foreach (long offset in Offsets)
        foreach (double? t in new double?[] { null, 1.5 })
        {
            var op = new FlipOp(ne, nf, -7 + (int)offset, 123_456, t, rng);
            var expected = ReferenceFlip.Apply(words, fmt, op, offset);
            var dst = torch.empty_like(x);
            DeviceFlip.FlipInto(x, dst, op, offset, Kernels);
            Assert.Equal(expected, TensorBits.ReadWords(dst));
            var inPlace = x.clone();
            DeviceFlip.FlipInto(inPlace, inPlace, op, offset, Kernels);
            Assert.Equal(expected, TensorBits.ReadWords(inPlace));
        }
        Assert.Equal(words, TensorBits.ReadWords(x));
    }

    [Theory]
    [InlineData(FlipRng.Fast, FlipFormat.BFloat16)]
    [InlineData(FlipRng.Philox, FlipFormat.Float32)]
    public void A_strided_view_flips_in_row_major_order(FlipRng rng, FlipFormat fmt)
    {
        using var scope = torch.NewDisposeScope();
        var x = TensorBits.FromWords(FlipKernelTests.RandomWords(fmt, 300 * 500, 9), new long[] { 300, 500 }, fmt).t();
        var op = new FlipOp(3, 5, 11, 12, 1.5, rng);
        var dst = torch.empty(x.shape, x.dtype);
        DeviceFlip.FlipInto(x, dst, op, 0, Kernels);
        Assert.Equal(TensorBits.ReadWords(ReferenceFlip.Flip(x, op)), TensorBits.ReadWords(dst));
    }

    [Theory]
    [InlineData(FlipRng.Fast, FlipFormat.BFloat16)]
    [InlineData(FlipRng.Philox, FlipFormat.Float16)]
    [InlineData(FlipRng.Fast, FlipFormat.Float32)]
    public void Recorded_drops_and_gradient_match_the_cpu_engine(FlipRng rng, FlipFormat fmt)
    {
        using var scope = torch.NewDisposeScope();
        const int size = 200_003;
        var words = FlipKernelTests.RandomWords(fmt, size, 5);
        var x = TensorBits.FromWords(words, new long[] { size }, fmt);
        var grad = torch.randn(size).to(x.dtype);
        var op = new FlipOp(2, 4, 31, 32, 1.5, rng);

        var cpu = torch.empty_like(x);
        var cpuDropped = BitFlip.FlipIntoRecordingDropped(x, cpu, op, 1000);
        var device = torch.empty_like(x);
        var deviceDropped = DeviceFlip.FlipIntoRecordingDropped(x, device, op, 1000, Kernels);
        Assert.Equal(TensorBits.ReadWords(cpu), TensorBits.ReadWords(device));
        Assert.NotNull(cpuDropped);
        Assert.Equal(cpuDropped!.data<long>().ToArray(), deviceDropped!.data<long>().ToArray());

        var cpuGrad = BitFlip.StraightThroughGradient(x, grad, op, 1000);
        var deviceGrad = DeviceFlip.StraightThroughGradient(x, grad, op, 1000, Kernels);
        Assert.Equal(TensorBits.ReadWords(cpuGrad), TensorBits.ReadWords(deviceGrad));
        Assert.True(cpuGrad.eq(0).sum().item<long>() > grad.eq(0).sum().item<long>());
    }

    [Fact]
    public void Nothing_dropped_records_null_and_no_zero_out_copies_the_gradient()
    {
        using var scope = torch.NewDisposeScope();
        var x = torch.full(1000, 0.25f).to(ScalarType.BFloat16);
        var dst = torch.empty_like(x);
        Assert.Null(DeviceFlip.FlipIntoRecordingDropped(x, dst, new FlipOp(null, 16, 1, 2, 8192.0), 0, Kernels));
        var grad = torch.randn(1000).to(ScalarType.BFloat16);
        var copied = DeviceFlip.StraightThroughGradient(x, grad, new FlipOp(3, 3, 1, 2, null), 0, Kernels);
        Assert.Equal(TensorBits.ReadWords(grad), TensorBits.ReadWords(copied));
        Assert.NotEqual(grad.Handle, copied.Handle);
    }

    /// <summary>The fast generator is copy, sparse XOR, then zero-out; Philox is one element-wise kernel.</summary>
    [Fact]
    public void Each_generator_launches_its_kernels()
    {
        using var scope = torch.NewDisposeScope();
        var launcher = EmulatedFlipLauncher.Instance;
        var x = torch.randn(5000).to(ScalarType.BFloat16);
        var before = launcher.Launches.ToArray();
        DeviceFlip.FlipInto(x, torch.empty_like(x), new FlipOp(4, null, 1, 2, 2.0, FlipRng.Fast), 0, launcher);
        DeviceFlip.FlipInto(x, torch.empty_like(x), new FlipOp(4, null, 1, 2, 2.0, FlipRng.Philox), 0, launcher);
        var delta = launcher.Launches.Zip(before, (a, b) => a - b).ToArray();
        Assert.Equal(new[] { 1, 1, 1, 0 }, delta);
    }

    [Theory]
    [InlineData(1.0, "0x1.0000000000000p+0")]
    [InlineData(-0.75, "-0x1.8000000000000p-1")]
    [InlineData(0.0, "0x0p+0")]
    [InlineData(4.9406564584124654e-324, "0x0.0000000000001p-1022")]
    [InlineData(0.6931471805599453, "0x1.62e42fefa39efp-1")]
    public void Hex_literals_are_exact(double value, string literal) =>
        Assert.Equal(literal, FlipKernelSource.HexLiteral(value));

    [Fact]
    public void Nvrtc_options_forbid_contraction_and_target_the_gpu()
    {
        var options = CudaFlipLauncher.CompileOptions(9, 0);
        Assert.Contains("--fmad=false", options);
        Assert.Contains("--gpu-architecture=sm_90", options);
    }
}

/// <summary>The LoRA layer's three paths (fused training function, reference composition, no-grad) through the device path.</summary>
public class DeviceFlipLayerTests
{
    static readonly FlipSettings Noisy = new(0.125, 0.0625, 8.0, 0.25, 0.125, 16.0, 40, FlipRng.Fast);

    static (uint[] Out, uint[] GradX, uint[] GradA, uint[] GradB, uint[] Eval) Run(FlipSettings settings, bool reference)
    {
        using var scope = torch.NewDisposeScope();
        var w = torch.randn(new long[] { 48, 64 }, generator: new Generator(7)).mul(4).to(ScalarType.BFloat16);
        var layer = new Bflora.Lora.BitFlipLinearLora(new TorchSharp.Modules.Parameter(w, requires_grad: false), null, 4, 8,
            3, settings, new FlipStep(), new Generator(11));
        using (torch.no_grad()) layer.LoraB!.normal_(0, 0.5, generator: new Generator(5));
        var x = torch.randn(new long[] { 2, 9, 64 }, generator: new Generator(3)).mul(8).to(ScalarType.BFloat16).requires_grad_(true);
        var y = reference ? layer.ForwardReference(x) : layer.forward(x);
        y.@float().pow(2).sum().backward();
        Tensor eval;
        using (torch.no_grad()) eval = layer.forward(x);
        return (Words(y), Words(x.grad!), Words(layer.LoraA!.grad!), Words(layer.LoraB.grad!), Words(eval));
    }

    static uint[] Words(Tensor t) => TensorBits.ReadWords(t.detach());

    [Theory]
    [InlineData(FlipRng.Fast, false)]
    [InlineData(FlipRng.Philox, false)]
    [InlineData(FlipRng.Fast, true)]
    public void Layer_through_the_device_path_equals_the_cpu_engine(FlipRng rng, bool reference)
    {
        var settings = Noisy with { Rng = rng };
        var cpu = Run(settings, reference);
        int before = EmulatedFlipLauncher.Instance.Launches.Sum();
        var device = EmulatedFlipLauncher.OnDevicePath(() => Run(settings, reference));
        Assert.True(EmulatedFlipLauncher.Instance.Launches.Sum() > before);
        Assert.Equal(cpu.Out, device.Out);
        Assert.Equal(cpu.GradX, device.GradX);
        // On the device path the fused function's drop correction sums in the kernel's order.
        WithinBf16Rounding(cpu.GradA, device.GradA, exact: reference);
        WithinBf16Rounding(cpu.GradB, device.GradB, exact: reference);
        Assert.Equal(cpu.Eval, device.Eval);
        Assert.Contains(cpu.GradX, g => g == 0);
    }

    /// <summary>
    /// Equal bits, or (where the device sums in another order) bf16 values within bf16 rounding of the whole:
    /// the correction's exact match is held in DropRecordTests, in fp32.
    /// </summary>
    static void WithinBf16Rounding(uint[] expected, uint[] actual, bool exact)
    {
        if (exact)
        {
            Assert.Equal(expected, actual);
            return;
        }
        static double[] Values(uint[] words) => words.Select(w => (double)BitConverter.Int32BitsToSingle((int)(w << 16))).ToArray();
        double[] e = Values(expected), a = Values(actual);
        double err = Math.Sqrt(e.Zip(a, (x, y) => (x - y) * (x - y)).Sum()), scale = Math.Sqrt(e.Sum(x => x * x));
        Assert.True(err <= 1e-2 * scale, $"relative error {err / scale:G3} exceeds bf16 rounding");
    }
}
