using System.Collections.Concurrent;

namespace Bflora.Bitflip.Cuda;

/// <summary>
/// flip_kernels.cu compiled once per GPU with NVRTC for that GPU's architecture, and launched on libtorch's default
/// stream, so a kernel runs after the tensor ops that produced its input and before those that read its output.
/// </summary>
public sealed class CudaFlipLauncher : IFlipKernelLauncher
{
    const uint ThreadsPerBlock = 256;

    /// <summary>Grid-stride kernels need no more blocks than keep every SM busy; more only adds scheduling.</summary>
    const long MaxBlocks = 1 << 16;

    static readonly ConcurrentDictionary<int, Lazy<CudaFlipLauncher>> s_devices = new();

    readonly IntPtr _context;
    readonly IntPtr[] _functions;

    /// <summary>Options that keep the device's arithmetic the reference's: no fused multiply-adds, IEEE division.</summary>
    public static IReadOnlyList<string> CompileOptions(int major, int minor) => new[]
    {
        $"--gpu-architecture=sm_{major}{minor}", "--fmad=false", "--prec-div=true", "--std=c++17",
    };

    /// <summary>The launcher of the given CUDA device ordinal, compiling on first use.</summary>
    public static CudaFlipLauncher For(int deviceOrdinal) =>
        s_devices.GetOrAdd(deviceOrdinal, d => new Lazy<CudaFlipLauncher>(() => new CudaFlipLauncher(d))).Value;

    /// <summary>What compiled the kernels, for logs: NVRTC's version and library, and the target.</summary>
    public string Description { get; }

    CudaFlipLauncher(int ordinal)
    {
        var driver = CudaDriver.Instance;
        _context = driver.Enter(ordinal);
        var (major, minor) = driver.ComputeCapability(ordinal);
        var nvrtc = new Nvrtc();
        var cubin = nvrtc.CompileToCubin(FlipKernelSource.Text, "flip_kernels.cu", CompileOptions(major, minor));
        var module = driver.LoadModule(cubin);
        _functions = Enum.GetValues<FlipKernel>().Select(k => driver.Function(module, KernelName(k))).ToArray();
        var (vMajor, vMinor) = nvrtc.Version;
        Description = $"NVRTC {vMajor}.{vMinor} ({nvrtc.LibraryPath}), sm_{major}{minor}, {cubin.Length} bytes of cubin";
    }

    public static string KernelName(FlipKernel kernel) => kernel switch
    {
        FlipKernel.Fast => "bflora_flip_fast",
        FlipKernel.Philox => "bflora_flip_philox",
        FlipKernel.ZeroOut => "bflora_zero_out",
        FlipKernel.LoraCorrection => "bflora_lora_correct",
        _ => throw new ArgumentOutOfRangeException(nameof(kernel)),
    };

    public void Launch<TArgs>(FlipKernel kernel, in TArgs args, long threads) where TArgs : unmanaged
    {
        if (threads <= 0) return;
        var driver = CudaDriver.Instance;
        driver.MakeCurrent(_context);
        // The fast generator has one long walk per thread: small blocks spread them over more SMs.
        uint perBlock = kernel == FlipKernel.Fast ? 32u : ThreadsPerBlock;
        long blocks = Math.Min(MaxBlocks, (threads + perBlock - 1) / perBlock);
        driver.Launch(_functions[(int)kernel], (uint)blocks, perBlock, args);
    }

    /// <summary>Waits for the device; a kernel fault surfaces here.</summary>
    public static void Synchronize() => CudaDriver.Instance.Synchronize();
}
