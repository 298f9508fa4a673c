using Bflora.Tests.Cli;
using Bflora.Tests.Reliability;
using Xunit;

namespace Bflora.Tests.Bitflip;

/// <summary>The GPU test subset, run here on the CPU engine, whose every check must pass; without a GPU, cuda is refused.</summary>
public class SelftestGpuTests
{
    [Fact]
    public void Cpu_engine_passes_every_check_through_the_cli()
    {
        var r = CliRunner.Run(new[] { "selftest-gpu", "--device", "cpu" });
        Assert.True(r.ExitCode == 0, r.Stdout + r.Stderr);
        var lines = r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(12 + 1 + 2 * 3 * 3 * 2 + 2 * 3 + 1 + 2, lines.Count(l => l.StartsWith("PASS ")));
        Assert.Contains(lines, l => l.StartsWith("PASS training_losses_match_cpu cpu: largest relative difference 0 "));
        Assert.DoesNotContain(lines, l => l.StartsWith("FAIL"));
        Assert.Contains("selftest-gpu: all checks passed", r.Stdout);
    }

    [Fact]
    public void Cuda_without_a_gpu_is_one_clean_error() =>
        CleanError.Check(CliRunner.Run(new[] { "selftest-gpu" }), "sees no CUDA device", "BFLORA_LIBTORCH");
}
