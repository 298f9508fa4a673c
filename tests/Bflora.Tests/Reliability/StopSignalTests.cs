using System.Diagnostics;
using System.Text.Json;
using Bflora.Tests.Checkpoints;
using Bflora.Tests.Cli;
using Bflora.Tests.Distributed;
using Xunit;

namespace Bflora.Tests.Reliability;

/// <summary>
/// Ctrl-C, SIGTERM or SIGUSR1 during `bflora train`: every rank stops after the same step, checkpoints it and draws
/// loss.png, exits 128 + the signal, and `--resume` goes on as if nothing had happened. A second signal ends it at once.
/// The signals are real (kill(2)), sent once the run has logged a few steps.
/// </summary>
[Collection("mpi")]
public class StopSignalTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(120);
    private const int SigInt = 2, SigUsr1 = 10, SigTerm = 15;
    private const string Acknowledgement = "stopping after the current step, with a checkpoint (send it again to end now)";

    private static string[] Train(string output, int steps, params string[] extra) =>
        ["train", "--config", RepoPaths.Of("configs", "debug.toml"), "--steps", steps.ToString(), "--out", output,
         "--set", "training.seq_len=256", "--set", "training.local_batch_size=4", "--set", "training.log_freq=1",
         "--set", "training.save_freq=1000", .. extra];

    [Theory]
    [InlineData(SigInt, "SIGINT")]
    [InlineData(SigTerm, "SIGTERM")]
    public void A_signal_stops_after_the_step_with_a_checkpoint_and_resume_matches_an_uninterrupted_run(int signal, string name)
    {
        const int steps = 40;
        using var dir = new TempFolder();
        string whole = dir.File("whole"), stopped = dir.File("stopped");
        var reference = CliRunner.Run(Train(whole, steps), Timeout);
        Assert.True(reference.ExitCode == 0, reference.Stderr);

        var run = SignalAfterRows(Start(Train(stopped, steps)), stopped, rows: 3, signal);
        Assert.True(run.ExitCode == 128 + signal, $"exit {run.ExitCode}\n{run.Stdout}\n{run.Stderr}");
        Assert.Equal($"{name}: {Acknowledgement}", Assert.Single(run.StderrLines));
        int at = StoppedStep(run.Stdout, name);
        Assert.InRange(at, 3, steps - 1);
        Assert.Contains($"Stopped by {name}: {at} of {steps} steps", run.Stdout);
        // The step it stopped after is checkpointed although save_freq is far off, and the plot is drawn.
        Assert.Equal([$"step-{at}"], Directory.GetDirectories(Path.Combine(stopped, "checkpoints")).Select(Path.GetFileName));
        Assert.True(File.Exists(Path.Combine(stopped, "loss.png")));
        Assert.Equal(at, Losses(stopped).Count);

        var resumed = CliRunner.Run([.. Train(stopped, steps), "--resume"], Timeout);
        Assert.True(resumed.ExitCode == 0, resumed.Stderr);
        Assert.Contains($"Resumed from {Path.Combine(stopped, "checkpoints", $"step-{at}")} at step {at}", resumed.Stdout);
        Assert.Equal(Losses(whole), Losses(stopped));
    }

    [Fact]
    public void A_second_signal_ends_the_run_at_once()
    {
        using var dir = new TempFolder();
        string output = dir.File("run");
        // Steps of about a second; the second signal follows the first's acknowledgement, inside the same step.
        var process = Start(Train(output, 1000, "--set", "training.seq_len=2048", "--set", "training.local_batch_size=16"));
        var run = SignalAfterRows(process, output, rows: 1, SigInt, SigInt);
        Assert.Equal(128 + SigInt, run.ExitCode);
        Assert.Contains(Acknowledgement, run.Stderr);
        Assert.DoesNotContain("Stopped by", run.Stdout);
        Assert.False(Directory.Exists(Path.Combine(output, "checkpoints")) &&
                     Directory.GetDirectories(Path.Combine(output, "checkpoints"), "step-*").Length > 0,
            "the second signal should end the run before its step's checkpoint");
    }

    [Fact]
    public void A_signal_to_one_rank_stops_both_after_the_same_step_and_the_run_resumes()
    {
        using var dir = new TempFolder();
        string output = dir.File("run");
        string[] train = Train(output, 200, "--set", "parallelism.fsdp_degree=2");
        string metrics = Path.Combine(output, "metrics.jsonl");
        // Rank 1 alone gets SIGUSR1 (its own shell's pid becomes the trainer's through exec) once rank 0 logged 3 rows;
        // rank 0 learns of it only through the per-step agreement.
        string args = string.Join(' ', train.Select(a => $"'{a}'"));
        string cmd = $"[ \"$OMPI_COMM_WORLD_RANK\" = 1 ] && (while [ \"$(cat '{metrics}' 2>/dev/null | wc -l)\" -lt 3 ]; " +
                     $"do sleep 0.05; done; kill -USR1 $$) & exec dotnet '{MpiRunner.CliDll}' {args}";
        var (r, _) = MpiRunner.Run(2, ["sh", "-c", cmd], Timeout);
        Assert.True(r.ExitCode == 128 + SigUsr1, $"exit {r.ExitCode}\n{r.Stdout}\n{r.Stderr}");
        int at = StoppedStep(r.Stdout, "SIGUSR1");
        Assert.InRange(at, 3, 199);
        // Only rank 1 was signalled, so only rank 1 says so.
        Assert.Contains($"rank 1: SIGUSR1: {Acknowledgement}", r.Stderr);
        Assert.DoesNotContain("rank 0: SIGUSR1", r.Stderr);
        string checkpoint = Path.Combine(output, "checkpoints", $"step-{at}");
        Assert.True(File.Exists(Path.Combine(checkpoint, "adapter_model.safetensors")));
        Assert.Equal(2, Directory.GetFiles(Path.Combine(checkpoint, "trainer_state"), "optimizer*").Length);
        Assert.True(File.Exists(Path.Combine(output, "loss.png")));

        var (resumed, _) = MpiRunner.Bflora(2, [.. Train(output, at + 2, "--set", "parallelism.fsdp_degree=2"), "--resume"], Timeout);
        Assert.True(resumed.ExitCode == 0, $"{resumed.Stdout}\n{resumed.Stderr}");
        Assert.Contains($"at step {at}", resumed.Stdout);
        Assert.Equal(at + 2, Losses(output).Count);
    }

    [Fact]
    public void Ctrl_c_on_run_sh_stops_every_rank_after_its_step()
    {
        using var dir = new TempFolder();
        string output = dir.File("run");
        var start = new ProcessStartInfo(RepoPaths.Of("scripts", "run.sh"))
        {
            WorkingDirectory = RepoPaths.Root, RedirectStandardOutput = true, RedirectStandardError = true,
        };
        foreach (string a in Train(output, 200, "--set", "parallelism.fsdp_degree=2").Skip(3).Prepend("configs/debug.toml"))
            start.ArgumentList.Add(a);
        start.Environment["OMPI_MCA_rmaps_base_oversubscribe"] = "1";
        start.Environment["OMPI_MCA_btl_vader_single_copy_mechanism"] = "none";
        var run = SignalAfterRows(Process.Start(start)!, output, rows: 3, SigInt);
        Assert.True(run.ExitCode == 128 + SigUsr1, $"exit {run.ExitCode}\n{run.Stdout}\n{run.Stderr}");
        Assert.Contains("run.sh: stopping every rank after its current step", run.Stderr);
        Assert.Contains($"rank 0: SIGUSR1: {Acknowledgement}", run.Stderr);
        Assert.Contains($"rank 1: SIGUSR1: {Acknowledgement}", run.Stderr);
        int at = StoppedStep(run.Stdout, "SIGUSR1");
        Assert.True(Directory.Exists(Path.Combine(output, "checkpoints", $"step-{at}")));
    }

    private static Process Start(string[] args) => Process.Start(CliRunner.StartInfo(args))!;

    /// <summary>
    /// Sends <paramref name="signals"/> once metrics.jsonl has <paramref name="rows"/> rows, each after the one before
    /// it was acknowledged on stderr, then waits for the end.
    /// </summary>
    private static CliResult SignalAfterRows(Process process, string output, int rows, params int[] signals)
    {
        using var _ = process;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = new List<string>();
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (stderr) stderr.Add(e.Data); };
        process.BeginErrorReadLine();
        int Acknowledged() { lock (stderr) return stderr.Count(l => l.Contains(Acknowledgement, StringComparison.Ordinal)); }
        try
        {
            string metrics = Path.Combine(output, "metrics.jsonl");
            var clock = Stopwatch.StartNew();
            while (!process.HasExited && clock.Elapsed < Timeout && (File.Exists(metrics) ? File.ReadAllLines(metrics).Length : 0) < rows)
                Thread.Sleep(5);
            // (The output is read only once the run has ended: reading it earlier would wait for the end.)
            if (process.HasExited) Assert.Fail($"the run ended before it was signalled\n{stdout.Result}");
            for (int i = 0; i < signals.Length; i++)
            {
                while (i > 0 && Acknowledged() < 1 && !process.HasExited && clock.Elapsed < Timeout) Thread.Sleep(1);
                var kill = ChildProcess.Finish(Process.Start(new ProcessStartInfo("kill", ["-s", signals[i].ToString(), process.Id.ToString()])
                    { RedirectStandardOutput = true, RedirectStandardError = true })!, Timeout, "kill");
                Assert.True(kill.ExitCode == 0, $"kill -s {signals[i]} {process.Id}: {kill.Stderr}");
            }
            if (!process.WaitForExit(Timeout))
                throw new TimeoutException($"the signalled run did not end within {Timeout.TotalSeconds} s");
            process.WaitForExit();
            lock (stderr) return new CliResult(process.ExitCode, stdout.Result, string.Join('\n', stderr));
        }
        finally
        {
            if (!process.HasExited) process.Kill(entireProcessTree: true);
        }
    }

    private static int StoppedStep(string stdout, string signal)
    {
        string line = Assert.Single(stdout.Split('\n'), l => l.StartsWith($"Stopped by {signal} after step ", StringComparison.Ordinal));
        return int.Parse(line.Split(' ')[5].Split('/')[0]);
    }

    private static List<double> Losses(string output) =>
        File.ReadAllLines(Path.Combine(output, "metrics.jsonl"))
            .Select(l => JsonDocument.Parse(l).RootElement.GetProperty("loss").GetDouble()).ToList();
}
