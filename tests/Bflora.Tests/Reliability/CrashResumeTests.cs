using System.Diagnostics;
using System.Text.Json;
using Bflora.Tests.Checkpoints;
using Bflora.Tests.Cli;
using Xunit;

namespace Bflora.Tests.Reliability;

/// <summary>
/// `kill -9` of the trainer (aimed at a checkpoint being written), then `--resume`: the run continues from the newest
/// complete checkpoint and its losses from there on equal an uninterrupted run's. (A killed rank under mpirun:
/// Distributed/MpiCollectivesTests.)
/// </summary>
public class CrashResumeTests
{
    private const int Steps = 6;

    private static string[] Train(string output, int steps = Steps) =>
        ["train", "--config", RepoPaths.Of("configs", "debug.toml"), "--steps", steps.ToString(), "--out", output,
         "--set", "training.seq_len=32", "--set", "training.log_freq=1", "--set", "training.save_freq=1"];

    [Fact]
    public void A_run_killed_while_checkpointing_resumes_with_identical_losses()
    {
        using var dir = new TempFolder();
        string whole = dir.File("whole");
        var reference = CliRunner.Run(Train(whole), CleanError.Timeout);
        Assert.True(reference.ExitCode == 0, reference.Stderr);

        // A tiny step takes milliseconds, so on a loaded machine the watcher can be scheduled too late and find the
        // run already done; only a kill that left steps to train tests the resume, so such a late kill is retried.
        const int attempts = 3;
        string killed = "";
        bool landed = false;
        for (int attempt = 1; attempt <= attempts && !landed; attempt++)
            landed = KillDuringCheckpoint(killed = dir.File($"killed-{attempt}"), afterStep: 2);
        Assert.True(landed, $"in {attempts} attempts the trainer finished all {Steps} steps before it could be killed");
        string root = Path.Combine(killed, "checkpoints");
        foreach (string step in Directory.GetDirectories(root, "step-*"))
            Assert.True(File.Exists(Path.Combine(step, "trainer_state", "state.json")), $"{step} is visible but incomplete");

        var resumed = CliRunner.Run([.. Train(killed), "--resume"], CleanError.Timeout);
        Assert.True(resumed.ExitCode == 0, resumed.Stderr);
        Assert.Contains("Resumed from", resumed.Stdout);
        Assert.Empty(Directory.GetDirectories(root, ".step-*"));
        Assert.Equal(Losses(whole), Losses(killed));
    }

    [Fact]
    public void A_metrics_row_cut_short_by_a_crash_is_dropped_on_resume()
    {
        using var dir = new TempFolder();
        string whole = dir.File("whole"), cut = dir.File("cut");
        Assert.Equal(0, CliRunner.Run(Train(whole), CleanError.Timeout).ExitCode);
        var first = CliRunner.Run(Train(cut, steps: 3), CleanError.Timeout);
        Assert.True(first.ExitCode == 0, first.Stderr);
        // What a crash in the middle of the next append leaves: half a row, no newline.
        string metrics = Path.Combine(cut, "metrics.jsonl");
        File.AppendAllText(metrics, "{\"step\":4,\"loss\":5.9");
        var resumed = CliRunner.Run([.. Train(cut), "--resume"], CleanError.Timeout);
        Assert.True(resumed.ExitCode == 0, resumed.Stderr);
        Assert.Equal(Losses(whole), Losses(cut));
    }

    [Fact]
    public void A_broken_metrics_row_that_is_not_the_last_is_one_error_line()
    {
        using var dir = new TempFolder();
        string run = dir.File("run");
        Assert.Equal(0, CliRunner.Run(Train(run, steps: 3), CleanError.Timeout).ExitCode);
        string metrics = Path.Combine(run, "metrics.jsonl");
        var lines = File.ReadAllLines(metrics);
        lines[1] = lines[1][..10];
        File.WriteAllLines(metrics, lines);
        var resumed = CliRunner.Run([.. Train(run), "--resume"], CleanError.Timeout);
        CleanError.Check(resumed, $"{metrics} line 2 is not a metrics row");
    }

    /// <summary>
    /// Starts the trainer and sends SIGKILL as soon as a temporary checkpoint folder after <paramref name="afterStep"/>
    /// shows up (mid-write), or at the latest when that checkpoint is complete. False when the kill came too late: the
    /// trainer had exited or had already written its last checkpoint.
    /// </summary>
    private static bool KillDuringCheckpoint(string output, int afterStep)
    {
        using var process = Process.Start(CliRunner.StartInfo(Train(output)))!;
        _ = process.StandardOutput.ReadToEndAsync();
        _ = process.StandardError.ReadToEndAsync();
        string root = Path.Combine(output, "checkpoints");
        var clock = Stopwatch.StartNew();
        bool Due() => Directory.Exists(root) && Directory.GetDirectories(root).Select(Path.GetFileName)
            .Any(n => n!.StartsWith($".step-{afterStep + 1}.", StringComparison.Ordinal) || n == $"step-{afterStep + 1}");
        while (!Due() && !process.HasExited && clock.Elapsed < CleanError.Timeout) Thread.Sleep(1);
        if (process.HasExited)
        {
            Assert.True(process.ExitCode == 0, $"the trainer to be killed failed by itself (exit {process.ExitCode})");
            return false;
        }
        process.Kill(entireProcessTree: true);   // SIGKILL on Linux
        process.WaitForExit();
        return !Directory.Exists(Path.Combine(root, $"step-{Steps}"));
    }

    private static List<double> Losses(string output) =>
        File.ReadAllLines(Path.Combine(output, "metrics.jsonl"))
            .Select(l => JsonDocument.Parse(l).RootElement.GetProperty("loss").GetDouble()).ToList();
}
