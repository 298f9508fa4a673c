using Bflora.Tests.Checkpoints;
using Bflora.Tests.Distributed;
using Xunit;

namespace Bflora.Tests.Reliability;

/// <summary>
/// Training failures on 2 real ranks (the "mpi" collection runs one job at a time). World size against fsdp_degree and
/// a failing or killed selftest rank: Distributed/MpiCollectivesTests.
/// </summary>
[Collection("mpi")]
public class MpiFailureTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(90);

    private static string[] Train(string output, int steps) =>
        ["train", "--config", "configs/debug.toml", "--steps", steps.ToString(), "--out", output,
         "--set", "training.seq_len=32", "--set", "parallelism.fsdp_degree=2"];

    [Fact]
    public void A_non_finite_step_stops_every_rank_with_one_error_line_and_no_abort()
    {
        using var dir = new TempFolder();
        var (r, elapsed) = MpiRunner.Bflora(2, [.. Train(dir.File("run"), 3),
            "--set", "bitflip.x_p_exp=0.5", "--set", "bitflip.x_zero_out_t=1e38", "--set", "bitflip.w_zero_out_t=1e38"], Timeout);
        Assert.Equal(2, r.ExitCode);
        string line = Assert.Single((r.Stdout + "\n" + r.Stderr).Split('\n'), l => l.Contains("error:", StringComparison.Ordinal));
        Assert.StartsWith("error: step 1: non-finite", line);
        CleanError.NoCrash(r);
        Assert.DoesNotContain("MPI_ABORT", r.Stderr);
        Assert.True(elapsed < TimeSpan.FromSeconds(60), $"took {elapsed.TotalSeconds:F1} s");
        Assert.False(Directory.Exists(Path.Combine(dir.File("run"), "checkpoints")));
    }

    [Fact]
    public void Cuda_on_two_ranks_is_refused_once_before_mpi_starts()
    {
        using var dir = new TempFolder();
        var (r, _) = MpiRunner.Bflora(2, [.. Train(dir.File("run"), 1), "--device", "cuda"], Timeout);
        Assert.Equal(2, r.ExitCode);
        string line = Assert.Single((r.Stdout + "\n" + r.Stderr).Split('\n'), l => l.Contains("error:", StringComparison.Ordinal));
        Assert.StartsWith("error: training.device = \"cuda\" with parallelism.fsdp_degree = 2", line);
        Assert.Contains("NCCL", line);
        CleanError.NoCrash(r);
    }

    [Fact]
    public void A_trainer_rank_killed_mid_run_ends_the_job_within_seconds()
    {
        using var dir = new TempFolder();
        // Rank 1 is killed (SIGKILL, no handler runs) a few seconds into a long run; rank 0 then waits in an all-reduce
        // for a peer that is gone, and only mpirun can end it.
        string args = string.Join(' ', Train(dir.File("run"), 10_000).Select(a => $"'{a}'"));
        string cmd = $"[ \"$OMPI_COMM_WORLD_RANK\" = 1 ] && (sleep 6; kill -9 $$) & exec dotnet '{MpiRunner.CliDll}' {args}";
        var (r, elapsed) = MpiRunner.Run(2, ["sh", "-c", cmd], Timeout);
        Assert.Contains("Step 5/10000", r.Stdout);   // it was training when the rank died
        Assert.NotEqual(0, r.ExitCode);
        Assert.True(elapsed < TimeSpan.FromSeconds(40), $"took {elapsed.TotalSeconds:F1} s");
    }
}
