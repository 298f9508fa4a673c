using System.Diagnostics;
using Bflora.Tests.Checkpoints;
using Bflora.Tests.Cli;
using Xunit;

namespace Bflora.Tests.Reliability;

/// <summary>
/// Output folders that cannot take a checkpoint, and steps whose loss or gradient is not finite, through the real
/// `bflora train`. (A file where the output folder should be: Training/TrainCliTests.)
/// </summary>
public class OutputAndNonFiniteCliTests
{
    private static readonly string Debug = RepoPaths.Of("configs", "debug.toml");

    // Exponent flips at p = 1/2 with thresholds no value reaches: infinities pass the zero-out, the residual stream
    // turns to NaN and so does the gradient, from the first step on. A real cause, no test hook.
    private static readonly string[] NonFinite =
    [
        "--set", "bitflip.x_p_exp=0.5", "--set", "bitflip.x_zero_out_t=1e38", "--set", "bitflip.w_zero_out_t=1e38",
    ];

    private static string[] Train(string output, int steps, params string[] more) =>
        ["train", "--config", Debug, "--steps", steps.ToString(), "--out", output,
         "--set", "training.seq_len=32", "--set", "training.log_freq=1", .. more];

    [Fact]
    public void A_fresh_run_into_another_runs_checkpoints_is_refused_and_touches_nothing()
    {
        using var dir = new TempFolder();
        string run = dir.File("run");
        Assert.Equal(0, CliRunner.Run(Train(run, 2), CleanError.Timeout).ExitCode);
        string metrics = File.ReadAllText(Path.Combine(run, "metrics.jsonl"));
        var r = CliRunner.Run(Train(run, 4), CleanError.Timeout);
        CleanError.Check(r, "already holds the checkpoints", "step-2", "--resume");
        Assert.Equal(metrics, File.ReadAllText(Path.Combine(run, "metrics.jsonl")));
        Assert.Equal(new[] { "step-2" }, Directory.GetDirectories(Path.Combine(run, "checkpoints")).Select(Path.GetFileName));
    }

    [Fact]
    public void A_full_output_disk_is_reported_before_the_first_step()
    {
        using var disk = new TinyDisk("64k");
        var r = CliRunner.Run(Train(disk.File("run"), 2), CleanError.Timeout);
        CleanError.Check(r, "bytes free", "a checkpoint needs about");
        Assert.DoesNotContain("Step 1/", r.Stdout);
        Assert.Empty(Directory.GetFileSystemEntries(disk.File("run")));
    }

    [Theory]
    [InlineData("eval")]
    [InlineData("eval", "--profile")]
    public void An_eval_json_on_a_read_only_disk_is_refused_before_the_eval(params string[] command)
    {
        using var disk = new TinyDisk("64k", readOnly: true);
        string json = disk.File(Path.Combine("results", "eval.json"));
        var r = CliRunner.Run([.. command, "--config", RepoPaths.Of("configs", "debug.toml"), "--num-samples", "2", "--json", json],
            CleanError.Timeout);
        CleanError.Check(r, $"cannot write --json {json}", "Read-only file system");
        Assert.DoesNotContain("EVAL", r.Stdout);
    }

    [Fact]
    public void A_disk_that_fills_up_mid_run_ends_it_naming_the_last_complete_checkpoint()
    {
        // Room for two checkpoints of ~155 KB, not three.
        using var disk = new TinyDisk("400k");
        string output = disk.File("run");
        var r = CliRunner.Run(Train(output, 5, "--set", "training.save_freq=1"), CleanError.Timeout);
        string last = Path.Combine(output, "checkpoints", "step-2");
        CleanError.Check(r, "cannot write the checkpoint of step 3", "No space left on device", $"the last complete checkpoint is {last}");
        Assert.Equal(new[] { "step-1", "step-2" },
            Directory.GetDirectories(Path.Combine(output, "checkpoints")).Select(Path.GetFileName).Order());
        Assert.True(File.Exists(Path.Combine(last, "trainer_state", "state.json")));
    }

    [Fact]
    public void A_non_finite_step_stops_with_its_number_and_the_last_checkpoint_intact()
    {
        using var dir = new TempFolder();
        string output = dir.File("run");
        Assert.Equal(0, CliRunner.Run(Train(output, 2), CleanError.Timeout).ExitCode);
        string good = Path.Combine(output, "checkpoints", "step-2");
        var before = Snapshot(good);
        string metrics = File.ReadAllText(Path.Combine(output, "metrics.jsonl"));

        var r = CliRunner.Run([.. Train(output, 4, NonFinite), "--resume"], CleanError.Timeout);
        CleanError.Check(r, "step 3: non-finite", "gradient norm NaN", good, "training.skip_nonfinite");
        Assert.Equal(before, Snapshot(good));
        Assert.Equal(new[] { "step-2" }, Directory.GetDirectories(Path.Combine(output, "checkpoints")).Select(Path.GetFileName));
        Assert.Equal(metrics, File.ReadAllText(Path.Combine(output, "metrics.jsonl")));
    }

    [Fact]
    public void With_skip_nonfinite_the_steps_are_skipped_and_counted()
    {
        using var dir = new TempFolder();
        string output = dir.File("run");
        var r = CliRunner.Run(Train(output, 2, [.. NonFinite, "--set", "training.skip_nonfinite=true"]), CleanError.Timeout);
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains("Step 1/2 | skipped: non-finite loss", r.Stdout);
        Assert.Contains("| 2 skipped so far", r.Stdout);
        Assert.Contains("Skipped 2 of 2 steps", r.Stdout);
        // No update was applied: the checkpoint's AdamW state has counted no optimizer step.
        string state = File.ReadAllText(Path.Combine(output, "checkpoints", "step-2", "trainer_state", "state.json"));
        Assert.Contains("\"optimizer_steps\": 0", state);
        Assert.Contains("\"skipped_steps\": 2", state);

        // The count is the run's, not the process's: a resume carries it on.
        var resumed = CliRunner.Run([.. Train(output, 3, [.. NonFinite, "--set", "training.skip_nonfinite=true"]), "--resume"],
            CleanError.Timeout);
        Assert.True(resumed.ExitCode == 0, resumed.Stderr);
        Assert.Contains("Step 3/3 | skipped: non-finite loss", resumed.Stdout);
        Assert.Contains("| 3 skipped so far", resumed.Stdout);
        Assert.Contains("Skipped 3 of 3 steps", resumed.Stdout);
    }

    /// <summary>
    /// A tmpfs of the given size: a real full disk. Mounting needs root, as ./test.sh runs; without it the test fails
    /// saying so rather than passing silently.
    /// </summary>
    private sealed class TinyDisk : IDisposable
    {
        private readonly TempFolder _dir = new();

        public TinyDisk(string size, bool readOnly = false)
        {
            using var mount = Process.Start("mount", ["-t", "tmpfs", "-o", $"size={size}{(readOnly ? ",ro" : "")}", "tmpfs", _dir.Path])!;
            mount.WaitForExit();
            if (mount.ExitCode == 0) return;
            _dir.Dispose();
            Assert.Fail("mount -t tmpfs failed: the full-disk tests need root (./test.sh runs as root)");
        }

        public string File(string name) => _dir.File(name);

        public void Dispose()
        {
            using (var umount = Process.Start("umount", [_dir.Path])!) umount.WaitForExit();
            _dir.Dispose();
        }
    }

    private static Dictionary<string, byte[]> Snapshot(string folder) =>
        Directory.GetFiles(folder, "*", SearchOption.AllDirectories)
            .ToDictionary(f => Path.GetRelativePath(folder, f), File.ReadAllBytes);
}
