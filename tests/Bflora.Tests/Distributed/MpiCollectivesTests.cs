using Xunit;

namespace Bflora.Tests.Distributed;

/// <summary>
/// MPI for real, 2 (or 3) ranks on this machine; the "mpi" collection runs these one after another (2 cores are shared).
/// </summary>
[Collection("mpi")]
public class MpiCollectivesTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);

    private static readonly string[] Checks =
    {
        "all_gather Float32", "start_all_gather Float32", "two_gathers_in_flight Float32", "broadcast Float32",
        "all_gather BFloat16", "start_all_gather BFloat16", "two_gathers_in_flight BFloat16", "broadcast BFloat16",
        "reduce_scatter_sum Float32", "all_reduce_sum Float32", "all_reduce_max Float32",
        "bf16_reduction_refused BFloat16", "barrier Float32",
    };

    [Theory]
    [InlineData(2)]
    [InlineData(3)]   // the ring reduce-scatter's index arithmetic only shows beyond 2 ranks
    public void Every_collective_matches_known_values_and_its_reference_twin(int ranks)
    {
        // Unbound (as scripts/run.sh launches), the ranks on this node share its cores for torch.
        var (r, _) = MpiRunner.Bflora(ranks, new[] { "selftest-mpi" }, Timeout, new[] { "--bind-to", "none" });
        int threads = Math.Max(1, Environment.ProcessorCount / ranks);
        Assert.True(r.ExitCode == 0, $"exit {r.ExitCode}\n{r.Stdout}\n{r.Stderr}");
        Assert.DoesNotContain("FAIL", r.Stdout);
        for (int rank = 0; rank < ranks; rank++)
        {
            Assert.Contains($"rank {rank} of {ranks}: {threads} torch threads", r.Stdout);
            foreach (var check in Checks) Assert.Contains($"rank {rank} PASS {check}", r.Stdout);
        }
    }

    [Fact]
    public void A_rank_that_fails_ends_the_whole_job_within_seconds()
    {
        // Rank 1 throws after MPI_Init while rank 0 waits in a barrier that can never complete: only MPI_Abort from the
        // error handler can end rank 0.
        var (r, elapsed) = MpiRunner.Bflora(2, new[] { "selftest-mpi", "--crash-rank", "1" }, Timeout);
        Assert.NotEqual(0, r.ExitCode);
        Assert.True(elapsed < TimeSpan.FromSeconds(30), $"took {elapsed.TotalSeconds:F1} s");
        Assert.Contains("error: rank 1: internal failure", r.Stderr);
    }

    [Fact]
    public void A_rank_killed_by_a_signal_ends_the_whole_job_within_seconds()
    {
        // No handler runs on SIGKILL: mpirun itself must stop rank 0, which waits in MPI for a peer that is gone
        // (--crash-rank 99: no rank fails on purpose, so every live rank blocks in the barrier).
        var cmd = $"[ \"$OMPI_COMM_WORLD_RANK\" = 1 ] && kill -9 $$; exec dotnet '{MpiRunner.CliDll}' selftest-mpi --crash-rank 99";
        var (r, elapsed) = MpiRunner.Run(2, new[] { "sh", "-c", cmd }, Timeout);
        Assert.NotEqual(0, r.ExitCode);
        Assert.True(elapsed < TimeSpan.FromSeconds(30), $"took {elapsed.TotalSeconds:F1} s");
    }

    [Fact]
    public void Fsdp_degree_unlike_the_world_size_is_one_error_line_and_exit_2()
    {
        var (r, elapsed) = MpiRunner.Bflora(2, new[] { "train", "--config", "configs/debug.toml" }, Timeout);
        Assert.Equal(2, r.ExitCode);
        var line = Assert.Single(ErrorLines(r.Stdout + "\n" + r.Stderr));
        Bflora.Tests.Reliability.CleanError.NoCrash(r);
        Assert.Contains("fsdp_degree is 1", line);
        Assert.Contains("world size 2", line);
        Assert.True(elapsed < TimeSpan.FromSeconds(30), $"took {elapsed.TotalSeconds:F1} s");
    }

    [Fact]
    public void Fsdp_degree_unlike_the_world_size_makes_every_rank_exit_2_by_itself()
    {
        // mpirun normally kills the other ranks when one exits non-zero; switched off here, each rank's own exit code
        // is visible, so this shows rank 1 stops by itself too (no rank is left waiting in MPI).
        var cmd = $"dotnet '{MpiRunner.CliDll}' train --config configs/debug.toml; echo \"rank $OMPI_COMM_WORLD_RANK exit $?\"";
        var (r, _) = MpiRunner.Run(2, new[] { "sh", "-c", cmd }, Timeout, new[] { "--mca", "orte_abort_on_non_zero_status", "0" });
        Assert.Contains("rank 0 exit 2", r.Stdout);
        Assert.Contains("rank 1 exit 2", r.Stdout);
        Assert.Single(ErrorLines(r.Stdout + "\n" + r.Stderr));
        Bflora.Tests.Reliability.CleanError.NoCrash(r);
    }

    private static string[] ErrorLines(string output) =>
        output.Split('\n').Where(l => l.Contains("error:", StringComparison.Ordinal)).ToArray();
}
