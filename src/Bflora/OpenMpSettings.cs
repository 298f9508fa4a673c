using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Bflora;

/// <summary>
/// libtorch's OpenMP (libgomp) lets idle worker threads spin for a while after every parallel region. Between torch
/// ops this process also runs .NET threads (the flip kernels' Parallel.For, the GC, MPI progress), and on a small or
/// shared machine the spinning threads take the cores those need: measured on the 2-core dev VM under load, a LoRA
/// step of a 100M model took 7–13 s with spinning and 1.9–3 s with OMP_WAIT_POLICY=PASSIVE (same run, same load).
/// libgomp reads the variable once, when libtorch loads, so it is set natively (the managed environment is not seen
/// by native getenv on Unix) as soon as this assembly loads. An explicit user setting wins.
/// </summary>
internal static class OpenMpSettings
{
    [DllImport("libc", SetLastError = true)]
    private static extern int setenv(string name, string value, int overwrite);

    // A module initializer is the one hook that runs before any code of this library can load libtorch.
#pragma warning disable CA2255
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void PreferPassiveWaiting()
    {
        if (OperatingSystem.IsLinux() && Environment.GetEnvironmentVariable("OMP_WAIT_POLICY") is null)
            setenv("OMP_WAIT_POLICY", "PASSIVE", 0);
    }
}
