using Bflora.Devices;
using Bflora.Tests.Checkpoints;
using Bflora.Tests.Cli;
using Bflora.Tests.Reliability;
using Xunit;

namespace Bflora.Tests.Devices;

/// <summary>BFLORA_LIBTORCH: the CLI's preload of another libtorch at start, through the real CLI and in process.</summary>
public class LibTorchPreloadTests
{
    private static readonly string[] EvalDebug = DeviceCliTests.EvalDebug;

    [Fact]
    public void A_libtorch_folder_that_does_not_exist_or_lacks_libc10_is_one_line_naming_the_path()
    {
        CleanError.Check(Run("/nonexistent/torch/lib", EvalDebug), "BFLORA_LIBTORCH=/nonexistent/torch/lib", "no such folder");
        using var dir = new TempFolder();
        CleanError.Check(Run(dir.Path, EvalDebug), Path.Combine(dir.Path, "libc10.so"), "cannot open shared object file");
        File.WriteAllText(dir.File("libc10.so"), new string('x', 4096));
        CleanError.Check(Run(dir.Path, EvalDebug), Path.Combine(dir.Path, "libc10.so"), "invalid ELF header");
    }

    [Fact]
    public void The_bundled_cpu_libtorch_named_as_the_folder_still_runs_on_the_cpu_and_has_no_cuda()
    {
        var ok = Run(AppContext.BaseDirectory, EvalDebug);
        Assert.True(ok.ExitCode == 0, ok.Stderr);
        Assert.Contains("| 2 | 128 |", ok.Stdout);
        CleanError.Check(Run(AppContext.BaseDirectory, [.. EvalDebug, "--device", "cuda"]), "BFLORA_LIBTORCH");
    }

    private static CliResult Run(string libtorch, string[] args) =>
        CliRunner.Run(args, CleanError.Timeout, environment: new Dictionary<string, string> { ["BFLORA_LIBTORCH"] = libtorch });

    [Fact]
    public void The_bundled_folder_preloads_its_three_cpu_libraries_in_dependency_order()
    {
        var loaded = LibTorchPreload.From(AppContext.BaseDirectory).Select(Path.GetFileName);
        Assert.Equal(new[] { "libc10.so", "libtorch_cpu.so", "libtorch.so" }, loaded);
    }
}
