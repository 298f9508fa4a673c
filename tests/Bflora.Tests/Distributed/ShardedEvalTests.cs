using System.Text.Json;
using Bflora.Tests.Cli;
using Xunit;

namespace Bflora.Tests.Distributed;

/// <summary>
/// `mpirun -n N bflora eval` (clean, --bitflip, --adapter, --profile): the model sharded as in training, the batches
/// spread over the ranks, against the same eval in one process. 37 windows in batches of the debug config's local_batch leave the last round short on every
/// world tried, so a rank that only keeps step is covered too.
/// </summary>
[Collection("mpi")]
public sealed class ShardedEvalTests : IDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(180);
    private readonly string _root = Path.Combine(Path.GetTempPath(), $"bflora-sharded-eval-{Guid.NewGuid():N}");

    public ShardedEvalTests() => Directory.CreateDirectory(_root);

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private static string[] Eval(string json, params string[] extra) =>
        new[] { "eval", "--config", "configs/debug.toml", "--num-samples", "37", "--json", json }.Concat(extra).ToArray();

    private (JsonElement One, JsonElement Sharded, CliResult Run) Both(int ranks, params string[] extra)
    {
        string one = Path.Combine(_root, $"one-{Guid.NewGuid():N}.json"), sharded = Path.Combine(_root, $"n-{Guid.NewGuid():N}.json");
        var single = CliRunner.Run(Eval(one, extra), Timeout);
        Assert.True(single.ExitCode == 0, single.Stderr);
        var (run, _) = MpiRunner.Bflora(ranks, Eval(sharded, extra.Concat(new[] { "--set", $"parallelism.fsdp_degree={ranks}" }).ToArray()), Timeout);
        Assert.True(run.ExitCode == 0, $"{run.Stdout}\n{run.Stderr}");
        return (JsonDocument.Parse(File.ReadAllText(one)).RootElement, JsonDocument.Parse(File.ReadAllText(sharded)).RootElement, run);
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public void With_the_head_gathered_the_sharded_eval_is_the_one_process_eval_bit_for_bit(int ranks)
    {
        // skip_patterns = [] converts the head too, so it is gathered whole and its cross-entropy is the evaluator's.
        var (one, sharded, run) = Both(ranks, "--bitflip", "--set", "bitflip.skip_patterns=[]");
        Assert.Equal(one.GetProperty("loss").GetDouble(), sharded.GetProperty("loss").GetDouble());
        Assert.Equal(37, sharded.GetProperty("sequences").GetInt32());
        Assert.Equal(one.GetProperty("tokens").GetInt64(), sharded.GetProperty("tokens").GetInt64());
        Assert.Equal("bitflip", sharded.GetProperty("mode").GetString());
        // Rank 0 alone prints the table, as plain text although mpirun gives the ranks a pseudo-terminal.
        Assert.Single(run.Stdout.Split('\n'), line => line.StartsWith("loss (CE):"));
        Assert.DoesNotContain('\u001b', run.Stdout);
    }

    [Fact]
    public void With_a_vocabulary_parallel_head_clean_and_adapter_evals_agree_with_one_process()
    {
        string train = Path.Combine(_root, "train");
        var trained = CliRunner.Run(new[] { "train", "--config", "configs/debug.toml", "--steps", "3", "--set", "training.lr=1e-2",
            "--set", "training.save_freq=3", "--out", train }, Timeout);
        Assert.True(trained.ExitCode == 0, trained.Stderr);
        string adapter = Path.Combine(train, "checkpoints", "step-3");
        var clean = Both(2);
        var tuned = Both(2, "--bitflip", "--adapter", adapter);
        // The vocabulary-parallel log-sum-exp is taken in another order than cross_entropy's (measured: 2e-8 relative).
        foreach (var (one, sharded, _) in new[] { clean, tuned })
        {
            double a = one.GetProperty("loss").GetDouble(), b = sharded.GetProperty("loss").GetDouble();
            Assert.True(Math.Abs(a - b) <= 1e-6 * a, $"loss {a} in one process, {b} on 2 ranks");
        }
        // The adapter is in the sharded model: it changes the loss as it does in one process.
        Assert.NotEqual(clean.Sharded.GetProperty("loss").GetDouble(), tuned.Sharded.GetProperty("loss").GetDouble());
        Assert.Contains("from " + adapter, tuned.Run.Stdout);
    }

    [Theory]
    [InlineData(2, "[]")]
    [InlineData(3, "[]")]
    [InlineData(2, "[\"output\"]")]
    public void The_sharded_profile_is_the_one_process_profile(int ranks, string skip)
    {
        // Histograms summed over ranks are exact, so every percentile, maximum, top layer and suggestion is equal. The
        // loss is within 1e-6: vocabulary-parallel, the log-sum-exp is taken in another order; with the head gathered
        // (skip []) it was equal on the AMD VM, but on an Intel Xeon VM the one-process profile's own loss moved by
        // ~1e-7 relative from one run to the next (1 run in 6), which is not understood yet (see the issue notes).
        var (one, sharded, _) = Both(ranks, "--profile", "--set", $"bitflip.skip_patterns={skip}");
        foreach (var key in new[] { "activations", "weights", "suggested", "top_layers", "layers", "sequences", "tokens" })
            Assert.Equal(one.GetProperty(key).GetRawText(), sharded.GetProperty(key).GetRawText());
        double a = one.GetProperty("loss").GetDouble(), b = sharded.GetProperty("loss").GetDouble();
        Assert.True(Math.Abs(a - b) <= 1e-6 * a, $"loss {a} in one process, {b} on {ranks} ranks");
    }

    [Fact]
    public void Run_sh_launches_eval_on_the_config_s_ranks()
    {
        // fsdp_degree from a --set among the arguments sets the number of ranks, as for train.
        string json = Path.Combine(_root, "run-sh.json");
        var start = new System.Diagnostics.ProcessStartInfo(RepoPaths.Of("scripts", "run.sh"))
        {
            WorkingDirectory = RepoPaths.Root, RedirectStandardOutput = true, RedirectStandardError = true,
        };
        foreach (var a in new[] { "eval", "configs/debug.toml", "--num-samples", "37", "--json", json, "--set", "parallelism.fsdp_degree=2" })
            start.ArgumentList.Add(a);
        start.Environment["OMPI_MCA_rmaps_base_oversubscribe"] = "1";
        var run = ChildProcess.Finish(System.Diagnostics.Process.Start(start)!, Timeout, "scripts/run.sh");
        Assert.True(run.ExitCode == 0, $"{run.Stdout}\n{run.Stderr}");
        Assert.Contains("mpirun -n 2", run.Stderr);
        Assert.Equal(37, JsonDocument.Parse(File.ReadAllText(json)).RootElement.GetProperty("sequences").GetInt32());
    }

    [Fact]
    public void A_world_size_that_is_not_fsdp_degree_is_refused_once()
    {
        string json = Path.Combine(_root, "refused.json");
        var (mismatch, _) = MpiRunner.Bflora(2, Eval(json), Timeout);
        Assert.Equal(2, mismatch.ExitCode);
        Assert.Single(mismatch.Stderr.Split('\n'), line => line.StartsWith("error: parallelism.fsdp_degree is 1 but the job has world size 2"));
        Assert.False(File.Exists(json));
    }
}
