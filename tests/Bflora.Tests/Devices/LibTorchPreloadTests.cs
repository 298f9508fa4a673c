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

    /// <summary>
    /// Another copy of libtorch, as an installed PyTorch is: before the CLI answered TorchSharp's own request for
    /// torch_cpu with the preloaded library, the bundled one was loaded beside it and the process aborted.
    /// </summary>
    [Fact]
    public void A_libtorch_in_another_folder_is_the_only_one_loaded_and_the_cli_runs_on_it()
    {
        using var dir = new TempFolder();
        foreach (string file in new[] { "libc10.so", "libtorch_cpu.so", "libtorch.so" }
                     .Concat(Directory.GetFiles(AppContext.BaseDirectory, "libgomp*").Select(Path.GetFileName))!)
            File.Copy(Path.Combine(AppContext.BaseDirectory, file!), dir.File(file!));
        var r = CliRunner.Run(EvalDebug, CleanError.Timeout, environment: new Dictionary<string, string>
        {
            ["BFLORA_LIBTORCH"] = dir.Path,
            ["LD_DEBUG"] = "files",
        });
        Assert.True(r.ExitCode == 0, r.Stderr[^Math.Min(r.Stderr.Length, 3000)..]);
        Assert.Contains("| 2 | 128 |", r.Stdout);
        // The loader's log: every libtorch_cpu.so mapped into the process is the copy.
        var mapped = r.StderrLines.Where(l => l.Contains("libtorch_cpu.so") && l.Contains("generating link map")).ToList();
        Assert.Equal(Path.Combine(dir.Path, "libtorch_cpu.so"), Assert.Single(mapped).Split("file=")[1].Split(' ')[0]);
    }

    [Fact]
    public void The_bundled_folder_preloads_its_three_cpu_libraries_in_dependency_order_under_torchsharps_names()
    {
        var loaded = LibTorchPreload.From(AppContext.BaseDirectory);
        Assert.Equal(new[] { "libc10.so", "libtorch_cpu.so", "libtorch.so" }, loaded.Select(l => Path.GetFileName(l.Path)));
        Assert.Equal(new[] { "c10", "torch_cpu", "torch" }, loaded.Select(l => l.Name));
        Assert.All(loaded, l => Assert.NotEqual(0, l.Handle));
        Assert.Equal("LibTorchSharp", LibTorchPreload.NameOf("LibTorchSharp"));
    }
}
