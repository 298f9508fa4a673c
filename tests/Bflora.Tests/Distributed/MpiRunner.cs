using System.Diagnostics;
using Bflora.Tests.Cli;

namespace Bflora.Tests.Distributed;

/// <summary>
/// Runs `mpirun -n N --oversubscribe [mpirun args] COMMAND...` for real, bounded by a timeout. The distributed tests
/// need Open MPI (./test.sh installs it); without mpirun they fail saying so rather than passing silently.
/// </summary>
public static class MpiRunner
{
    public static string CliDll => Path.Combine(AppContext.BaseDirectory, "Bflora.Cli.dll");

    /// <summary>The CLI under mpirun: `mpirun -n ranks dotnet Bflora.Cli.dll args`.</summary>
    public static (CliResult Result, TimeSpan Elapsed) Bflora(int ranks, string[] args, TimeSpan timeout, string[]? mpirunArgs = null) =>
        Run(ranks, new[] { "dotnet", CliDll }.Concat(args).ToArray(), timeout, mpirunArgs);

    public static (CliResult Result, TimeSpan Elapsed) Run(int ranks, string[] command, TimeSpan timeout, string[]? mpirunArgs = null)
    {
        string mpirun = FindMpirun() ?? throw new InvalidOperationException(
            "mpirun not found: the distributed tests need Open MPI (apt-get install openmpi-bin libopenmpi-dev; ./test.sh does this as root)");
        var start = new ProcessStartInfo(mpirun)
        {
            WorkingDirectory = RepoPaths.Root,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in new[] { "-n", ranks.ToString(), "--oversubscribe" }.Concat(mpirunArgs ?? Array.Empty<string>()).Concat(command))
            start.ArgumentList.Add(a);
        start.Environment["OMPI_ALLOW_RUN_AS_ROOT"] = "1";
        start.Environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1";
        // Shared memory without CMA (process_vm_readv): containers without CAP_SYS_PTRACE refuse it and Open MPI then
        // fails every large message; plain copy-in/copy-out works everywhere.
        start.Environment["OMPI_MCA_btl_vader_single_copy_mechanism"] = "none";
        start.Environment.Remove("BFLORA_DEBUG");
        start.Environment.Remove("BFLORA_LIBTORCH");
        var clock = Stopwatch.StartNew();
        using var process = Process.Start(start)!;
        return (ChildProcess.Finish(process, timeout, $"mpirun {string.Join(' ', command)}"), clock.Elapsed);
    }

    private static string? FindMpirun() =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries)
        .Select(dir => Path.Combine(dir, "mpirun")).FirstOrDefault(File.Exists);
}
