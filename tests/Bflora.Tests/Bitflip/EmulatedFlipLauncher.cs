using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using Bflora.Bitflip;
using Bflora.Bitflip.Cuda;

namespace Bflora.Tests.Bitflip;

/// <summary>
/// Runs the kernels of flip_kernels.cu, the very text NVRTC compiles, as host code built by g++: a prelude maps the
/// few CUDA words it uses (qualifiers, thread indices, atomicXor) to C++, and a loop plays every (block, thread) of a
/// small grid in turn. The grid is deliberately tiny, so every grid-stride loop takes many strides.
/// </summary>
internal sealed unsafe class EmulatedFlipLauncher : IFlipKernelLauncher
{
    const uint Grid = 3, Block = 7;

    const string Prelude = """
        struct bflora_dim3 { unsigned int x, y, z; };
        static bflora_dim3 blockIdx, threadIdx, blockDim, gridDim;
        #define __global__
        #define __device__
        #define __constant__
        #define __forceinline__ inline
        static inline unsigned int atomicXor(unsigned int* p, unsigned int v) { unsigned int old = *p; *p = old ^ v; return old; }
        static inline float atomicAdd(float* p, float v) { float old = *p; *p = old + v; return old; }

        """;

    const string Harness = """

        extern "C" void bflora_emulate(int kernel, const void* a, unsigned int grid, unsigned int block)
        {
            gridDim.x = grid; blockDim.x = block;
            for (unsigned int b = 0; b < grid; b++)
                for (unsigned int t = 0; t < block; t++)
                {
                    blockIdx.x = b; threadIdx.x = t;
                    if (kernel == 0) bflora_flip_fast(*(const FlipArgs*)a);
                    else if (kernel == 1) bflora_flip_philox(*(const FlipArgs*)a);
                    else if (kernel == 2) bflora_zero_out(*(const FlipArgs*)a);
                    else bflora_lora_correct(*(const CorrectArgs*)a);
                }
        }
        """;

    static readonly Lazy<EmulatedFlipLauncher> s_instance = new(() => new EmulatedFlipLauncher());

    public static EmulatedFlipLauncher Instance => s_instance.Value;

    /// <summary>Runs <paramref name="run"/> with this thread's CPU tensors on the device path, through these kernels.</summary>
    public static T OnDevicePath<T>(Func<T> run)
    {
        BitFlip.HostKernels = Instance;
        try
        {
            return run();
        }
        finally
        {
            BitFlip.HostKernels = null;
        }
    }

    readonly delegate* unmanaged<int, void*, uint, uint, void> _emulate;

    /// <summary>Kernel launches so far, by kernel, so tests can tell which steps ran.</summary>
    public int[] Launches { get; } = new int[Enum.GetValues<FlipKernel>().Length];

    EmulatedFlipLauncher()
    {
        string source = Prelude + FlipKernelSource.Text + Harness;
        string hash = Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(source)))[..16];
        string folder = Path.Combine(Path.GetTempPath(), "bflora-kernel-emulation");
        Directory.CreateDirectory(folder);
        string library = Path.Combine(folder, $"flip_kernels_{hash}.so");
        if (!File.Exists(library)) Compile(source, folder, library);
        var handle = NativeLibrary.Load(library);
        _emulate = (delegate* unmanaged<int, void*, uint, uint, void>)NativeLibrary.GetExport(handle, "bflora_emulate");
    }

    /// <summary>The same arithmetic rules NVRTC gets: no contraction into fused multiply-adds.</summary>
    static void Compile(string source, string folder, string library)
    {
        string cpp = Path.Combine(folder, $"{Path.GetFileNameWithoutExtension(library)}.{Environment.ProcessId}.cpp");
        string temp = library + $".{Environment.ProcessId}.tmp";
        File.WriteAllText(cpp, source);
        var start = new ProcessStartInfo("g++", new[]
        {
            "-x", "c++", "-std=c++17", "-O2", "-ffp-contract=off", "-fno-strict-aliasing", "-fPIC", "-shared",
            "-o", temp, cpp,
        }) { RedirectStandardError = true, RedirectStandardOutput = true };
        Process process;
        try
        {
            process = Process.Start(start)!;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new InvalidOperationException("the kernel emulation needs g++ (apt install g++): " + e.Message);
        }
        string errors = process.StandardError.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0) throw new InvalidOperationException($"g++ could not compile flip_kernels.cu:\n{errors}");
        File.Move(temp, library, overwrite: true);
        File.Delete(cpp);
    }

    public void Launch<TArgs>(FlipKernel kernel, in TArgs args, long threads) where TArgs : unmanaged
    {
        Interlocked.Increment(ref Launches[(int)kernel]);
        fixed (TArgs* a = &args) _emulate((int)kernel, a, Grid, Block);
    }
}
