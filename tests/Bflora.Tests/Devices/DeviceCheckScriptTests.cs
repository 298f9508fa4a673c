using System.Diagnostics;
using System.Text.Json;
using Bflora.Tests.Cli;
using Xunit;

namespace Bflora.Tests.Devices;

/// <summary>
/// scripts/device_check.sh without a GPU: a stand-in PyTorch (a torch package whose lib/ is this build's CPU libtorch),
/// a stand-in bundle (this build's libLibTorchSharp.so) and benchmarks that print the JSON lines the real ones print.
/// Every stage runs, and the table, the ratios and results.json come from those lines. A device run is one shot of a
/// few minutes, so the script's own mistakes must show up here.
/// </summary>
public sealed class DeviceCheckScriptTests : IDisposable
{
    private readonly string _work = Directory.CreateTempSubdirectory("bflora-device-check-").FullName;

    public void Dispose() => Directory.Delete(_work, recursive: true);

    private const string BfloraJson = """{"device": "cuda:0", "tokens_per_s": 30000.0, "step_s": 0.0683, "step_queued_s": 0.03, "mfu": 0.45, "peak_tflops": 790.0, "device_memory_used_gib": 40.5, "flip_overhead": 0.08, "copy_gbps": 3900.0, "bitflip_vs_copy": 0.9, "bitflip_philox_vs_copy": 0.5}""";

    private const string Baseline = """
        import json, sys
        keep = "--no-checkpointing" in sys.argv
        print("warming up")
        print(json.dumps({"impl": "pytorch", "tokens_per_s": 24000.0 if keep else 20000.0, "step_s": 0.0853 if keep else 0.1024,
                          "mfu": 0.36 if keep else 0.3, "peak_tflops": 790.0, "peak_memory_gib": 30.0}))
        """;

    [Fact]
    public void Stand_ins_run_every_stage_and_give_the_table_the_ratios_and_results_json()
    {
        string binaries = AppContext.BaseDirectory;
        string repo = Path.Combine(_work, "repo"), bundle = Path.Combine(repo, ".device-bundle");
        Directory.CreateDirectory(Path.Combine(repo, "scripts"));
        File.Copy(RepoPaths.Of("scripts", "device_check.sh"), Path.Combine(repo, "scripts", "device_check.sh"));
        Directory.CreateDirectory(bundle);
        File.WriteAllText(Path.Combine(bundle, "bflora"), "#!/bin/sh\nexit 1\n");
        File.CreateSymbolicLink(Path.Combine(bundle, "libLibTorchSharp.so"), Path.Combine(binaries, "libLibTorchSharp.so"));
        string torch = Path.Combine(_work, "python", "torch");
        Directory.CreateDirectory(torch);
        File.WriteAllText(Path.Combine(torch, "__init__.py"),
            "__version__ = '0.0+standin'\nclass version:\n    cuda = None\nclass cuda:\n    is_available = staticmethod(lambda: False)\n");
        File.CreateSymbolicLink(Path.Combine(torch, "lib"), binaries);
        File.WriteAllText(Path.Combine(_work, "bflora.json"), BfloraJson + "\n");
        File.WriteAllText(Path.Combine(_work, "baseline.py"), Baseline);
        string output = Path.Combine(_work, "out");

        var start = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(Path.Combine(repo, "scripts", "device_check.sh"));
        start.Environment["OUT"] = output;
        start.Environment["PYTHON"] = "python3";
        start.Environment["PYTHONPATH"] = Path.Combine(_work, "python");
        start.Environment["BFLORA_SELFTEST"] = "echo selftest-gpu: all checks passed";
        start.Environment["BFLORA_BENCH"] = $"cat '{Path.Combine(_work, "bflora.json")}'";
        start.Environment["PYTORCH_BENCH"] = Path.Combine(_work, "baseline.py");
        using var process = Process.Start(start)!;
        var run = ChildProcess.Finish(process, TimeSpan.FromMinutes(3), "device_check.sh");
        string log = run.Stdout + run.Stderr;
        Assert.True(run.ExitCode == 0, log);

        string summary = File.ReadAllText(Path.Combine(output, "summary.md"));
        Assert.Contains("gpu: nvidia-smi not found", summary);
        Assert.Contains("torch: 0.0+standin cuda None available False", summary);
        Assert.Contains("| bflora | 30,000 | 0.0683 | 0.450 | 790.0 | 0.359 | 40.5 |", summary);
        Assert.Contains("| pytorch | 20,000 | 0.1024 | 0.300 | 790.0 | 0.240 | 30.0 |", summary);
        Assert.Contains("| pytorch_keep | 24,000 | 0.0853 | 0.360 | 790.0 | 0.288 | 30.0 |", summary);
        Assert.Contains("bflora ÷ PyTorch (recomputing each block, as the seed) tokens/s: **1.50**", summary);
        Assert.Contains("bflora ÷ PyTorch (keeping activations, as bflora) tokens/s: **1.25**", summary);
        Assert.Contains("queued the step's forward and backward at 30.0 of 68.3 ms (44%): the GPU is the limit", summary);
        Assert.Contains("bitflip_vs_copy 0.90", summary);
        Assert.Contains("failed stages: none", summary);
        Assert.Contains("every symbol of libLibTorchSharp.so resolves", log);

        using var results = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "results.json")));
        Assert.Equal(30000.0, results.RootElement.GetProperty("bflora").GetProperty("tokens_per_s").GetDouble());
        Assert.Equal(24000.0, results.RootElement.GetProperty("pytorch_keep").GetProperty("tokens_per_s").GetDouble());
        // What a device run brings back is at most 8 files.
        Assert.InRange(Directory.GetFiles(output).Length, 7, 8);
    }
}
