using System.Diagnostics;
using Bflora.Checkpoints;
using Bflora.Config;
using Bflora.Devices;

namespace Bflora.Training;

/// <summary>What `bflora train` was asked for.</summary>
/// <param name="StopOnSignals">
/// While the steps run, SIGINT, SIGTERM, SIGUSR1 and SIGUSR2 stop the run after the current step, with a checkpoint
/// (<see cref="StopSignals"/>); otherwise they keep their default actions.
/// </param>
public sealed record TrainOptions(string OutputFolder, bool Resume = false, bool TrainSplitOnly = false, bool StopOnSignals = false);

/// <summary>
/// A step whose loss or gradient norm is not finite, with training.skip_nonfinite off. Both numbers are reduced over
/// ranks, so every rank stops at the same step with the same message.
/// </summary>
public sealed class NonFiniteStepException(string message) : BfloraInputException(message);

/// <summary>
/// How a run went: steps done, mean throughput of this process, the last checkpoint, all metrics rows, and the signal
/// that stopped it before training.steps (0: it ran to the end).
/// </summary>
public sealed record TrainResult(long Steps, double TokensPerSecond, string LastCheckpoint, IReadOnlyList<MetricsRow> Rows,
    int StoppedBy = 0);

/// <summary>
/// The train command's whole path: check the output folder, open the session (and resume it), run the steps with
/// logging and checkpoints, then the final checkpoint and loss.png. A step with a non-finite loss or gradient stops
/// the run (exit 2, the last complete checkpoint left as it was) or, with training.skip_nonfinite, is skipped and counted.
/// </summary>
public static class TrainRun
{
    public static TrainResult Execute(BfloraConfig config, TrainOptions options, ITrainingProgress progress,
        IGradientSync? sync = null)
    {
        sync ??= SingleProcessSync.Instance;
        // Only rank 0 prints, and its rows carry the loss already averaged over ranks.
        bool lead = sync.Rank == 0;
        if (!lead) progress = new PlainProgress(TextWriter.Null);
        var t = config.Training;
        if (t.Steps < 1) throw new BfloraInputException($"training.steps must be at least 1, got {t.Steps}");
        if (t.LogFreq < 1) throw new BfloraInputException($"training.log_freq must be at least 1, got {t.LogFreq}");
        if (t.SaveFreq < 1) throw new BfloraInputException($"training.save_freq must be at least 1, got {t.SaveFreq}");
        string output = Path.GetFullPath(options.OutputFolder);
        RefuseOutputInsideData(output, config);
        EnsureWritable(output);
        // Rank 0 stands for its job: it is the one that writes metrics and clears unfinished checkpoints.
        using var outputLock = lead ? OutputLock.Take(output) : null;
        string? resumeFrom = Checkpointer.Newest(output);
        if (options.Resume && resumeFrom is null)
            throw new BfloraInputException($"--resume: no complete checkpoint under {Checkpointer.Root(output)}");
        // A fresh run would mix its checkpoints with another run's, and a later --resume could pick the other's.
        if (!options.Resume && resumeFrom is not null)
            throw new BfloraInputException($"{output} already holds the checkpoints of a run (newest {resumeFrom}); " +
                "add --resume to continue it, or train into another --out");

        if (lead) RemoveUnfinishedCheckpoints(output);

        using var session = TrainingSession.Open(config, options.TrainSplitOnly, sync);
        EnsureSpace(output, session);
        if (resumeFrom is not null)
        {
            var state = Checkpointer.Load(resumeFrom, session);
            session.Unlogged = state.Unlogged ?? UnloggedLoss.None;
            if (state.Step >= t.Steps)
                throw new BfloraInputException($"the checkpoint {resumeFrom} is at step {state.Step}; ask for more steps than that (--steps)");
            if (lead) MetricsLog.TruncateAfter(output, state.Step);
            progress.Line($"Resumed from {resumeFrom} at step {state.Step}");
            // Moving or copying a dataset is fine; other files, a text field or window length go on from a position
            // that no longer means where the run was, which the user should hear about rather than find in the loss.
            // The saved A and B were trained under their scale; another lora_alpha rescales what they add from here on.
            if (!session.FullTraining && Lora.PeftAdapter.ReadConfig(resumeFrom).LoraAlpha is var savedAlpha
                && savedAlpha != config.Lora.LoraAlpha)
                progress.Line($"warning: lora.lora_alpha is {config.Lora.LoraAlpha:G6}, the checkpoint's {savedAlpha:G6}: " +
                              $"what the trained adapter adds is scaled ×{config.Lora.LoraAlpha / savedAlpha:G4} from here on");
            if (state.Data?.DifferencesTo(session.Data) is { Count: > 0 } changed)
                progress.Line($"warning: the data differs from the checkpoint's ({string.Join("; ", changed)}): " +
                              $"training goes on from the saved position, document {state.DataCursor.Document} of epoch {state.DataCursor.Epoch}");
        }
        else if (lead)
        {
            File.Delete(Path.Combine(output, MetricsLog.FileName));
        }
        progress.Line(Describe(session));

        var run = RunSteps(session, output, progress, sync, options.StopOnSignals);
        // Read before loss.png is drawn: the plot's renderer is not the training's memory.
        progress.Line($"Memory of rank 0: peak resident {ProcessMemory.Peak()} bytes, {session.ResidentBeforeModel} before the model" +
                      (ComputeDevice.MemoryInUse(session.Device) is long gpu ? $"; {gpu} bytes in use on {session.Device}" : ""));
        if (session.SkippedSteps > 0)
            progress.Line($"Skipped {session.SkippedSteps} of {session.CompletedSteps} steps (non-finite loss or gradient)");
        var rows = MetricsLog.Read(output);
        if (lead && rows.Count > 0) LossPlot.Write(Path.Combine(output, "loss.png"), rows, $"{config.Name}: training loss");
        return new TrainResult(session.CompletedSteps, run.Tokens / Math.Max(run.Seconds, 1e-9), run.LastCheckpoint!, rows,
            run.StoppedBy);
    }

    /// <summary>What <see cref="RunSteps"/> did: steps run here, their tokens and time, the last checkpoint, the stopping signal.</summary>
    private sealed record StepsRun(long Steps, long Tokens, double Seconds, string? LastCheckpoint, int StoppedBy);

    /// <summary>
    /// The steps from the session's position to training.steps: log lines and metrics rows every log_freq steps,
    /// checkpoints every save_freq steps and at the end, and with <paramref name="stopOnSignals"/> a checkpointed stop
    /// after the step during which any rank was signalled.
    /// </summary>
    private static StepsRun RunSteps(TrainingSession session, string output, ITrainingProgress progress, IGradientSync sync,
        bool stopOnSignals)
    {
        var t = session.Config.Training;
        var schedule = new LrSchedule(t.Lr, t.WarmupSteps, t.Steps);
        long firstStep = session.CompletedSteps + 1;
        var clock = Stopwatch.StartNew();
        long tokens = 0;
        string? lastCheckpoint = null;
        using var signals = stopOnSignals ? StopSignals.Listen(sync.WorldSize > 1 ? $"rank {sync.Rank}: " : "") : null;
        while (session.CompletedSteps < t.Steps)
        {
            var step = session.Step(schedule);
            tokens += step.Tokens;
            double elapsed = clock.Elapsed.TotalSeconds;
            double tokensPerSecond = tokens / Math.Max(elapsed, 1e-9);
            if (step.Skipped)
            {
                string what = $"loss {step.Loss:G4}, gradient norm {step.GradNorm:G4}";
                if (!t.SkipNonfinite)
                    throw new NonFiniteStepException(
                        $"step {step.Step}: non-finite {what}; stopped without applying it, the last complete checkpoint is " +
                        $"{Checkpointer.Newest(output) ?? "none"} (training.skip_nonfinite = true skips such steps)");
                session.SkippedSteps++;
                progress.Line($"Step {step.Step}/{t.Steps} | skipped: non-finite {what} | {session.SkippedSteps} skipped so far");
            }
            else
            {
                session.Unlogged = session.Unlogged.With(step.Loss);
                var eta = TimeSpan.FromSeconds(elapsed / (step.Step - firstStep + 1) * (t.Steps - step.Step));
                progress.Step(step.Step, t.Steps, step.Loss, tokensPerSecond, eta);
            }
            // A skipped step has no numbers worth a row (JSON cannot hold NaN); its neighbours' rows carry on.
            if (step.Step % t.LogFreq == 0 && !step.Skipped)
            {
                var row = new MetricsRow(step.Step, session.Unlogged.Mean, step.Lr, step.GradNorm, tokensPerSecond);
                session.Unlogged = UnloggedLoss.None;
                if (sync.Rank == 0) MetricsLog.Append(output, row);
                progress.Line(row.LogLine(t.Steps, elapsed));
            }
            // Every rank asks, so one rank's signal stops all of them after this same step.
            int signal = sync.MaxOverRanks(signals?.Received ?? 0);
            bool stop = signal != 0 && step.Step < t.Steps;
            if (step.Step % t.SaveFreq == 0 || step.Step == t.Steps || stop)
            {
                lastCheckpoint = SaveCheckpoint(output, session);
                progress.Line($"Saved checkpoint {lastCheckpoint}");
            }
            if (stop)
            {
                progress.Line($"Stopped by {StopSignals.Name(signal)} after step {step.Step}/{t.Steps}; continue it with --resume");
                return new StepsRun(step.Step - firstStep + 1, tokens, clock.Elapsed.TotalSeconds, lastCheckpoint, signal);
            }
        }
        return new StepsRun(t.Steps - firstStep + 1, tokens, clock.Elapsed.TotalSeconds, lastCheckpoint, 0);
    }

    /// <summary>
    /// A data folder is read recursively, so a run written into it would become data: its metrics.jsonl a document
    /// file without a text field, its files a change of the dataset the next resume warns about.
    /// </summary>
    private static void RefuseOutputInsideData(string output, BfloraConfig config)
    {
        string data = Path.GetFullPath(Data.DataLocator.Resolve(config.Data.Path));
        if (!Directory.Exists(data)) return;
        string inside = Path.GetRelativePath(data, output);
        bool outside = inside == ".." || inside.StartsWith(".." + Path.DirectorySeparatorChar, StringComparison.Ordinal)
                       || Path.IsPathRooted(inside);
        if (!outside)
            throw new BfloraInputException($"the output folder {output} is inside the data folder {data}, whose files " +
                                           "are all read as data: train into another --out");
    }

    /// <summary>Fails before any work if the output folder cannot be created or written.</summary>
    public static void EnsureWritable(string folder)
    {
        try
        {
            Directory.CreateDirectory(folder);
            AtomicFile.ProbeFolder(folder);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new BfloraInputException($"cannot write to the output folder {folder}: {e.Message}");
        }
    }

    /// <summary>
    /// Fails before the first step when the output folder's file system cannot hold one checkpoint: the masters and
    /// both AdamW moments, the adapter (or the whole model in full training) in bf16, and a little for JSON and metrics.
    /// </summary>
    private static void EnsureSpace(string output, TrainingSession session)
    {
        long masters = session.Slots.Sum(s => TensorMemory.ByteLength(s.Master));
        long weights = 2 * (session.FullTraining
            ? session.Model.parameters().Sum(p => p.numel())
            : session.Trainable.Sum(t => t.Param.numel()));
        long need = 3 * masters + weights + (64 << 10);
        long free = new DriveInfo(output).AvailableFreeSpace;
        if (free < need)
            throw new BfloraInputException($"the output folder {output} has {free:N0} bytes free, a checkpoint needs about {need:N0}");
    }

    /// <summary>A disk that fills up later still ends the run with one line naming the checkpoint that survived.</summary>
    private static string SaveCheckpoint(string output, TrainingSession session)
    {
        try
        {
            return Checkpointer.Save(output, session);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new BfloraInputException($"cannot write the checkpoint of step {session.CompletedSteps} under " +
                $"{Checkpointer.Root(output)}: {e.Message}; the last complete checkpoint is {Checkpointer.Newest(output) ?? "none"}", e);
        }
    }

    /// <summary>Hidden .step-N.*.tmp folders are checkpoints a killed run never finished; nothing reads them, so they go.</summary>
    private static void RemoveUnfinishedCheckpoints(string output)
    {
        string root = Checkpointer.Root(output);
        if (!Directory.Exists(root)) return;
        foreach (string dir in Directory.GetDirectories(root, ".step-*.tmp")) Directory.Delete(dir, recursive: true);
    }

    private static string Describe(TrainingSession session)
    {
        long trainable = session.Trainable.Sum(t => t.Param.numel());
        // From the dimensions: a sharded model's vocabulary-parallel head and embedding are not module parameters.
        long total = session.Args.TotalParams + (session.FullTraining ? 0 : trainable);
        string what = session.FullTraining ? "Trainable (full)" : "Trainable (LoRA)";
        string gathered = session.Fsdp is { } fsdp ? $" (+ {fsdp.GatherBufferBytes} bytes of gather buffers)" : "";
        return $"Replaced {session.Converted.Layers.Count} Linear layers | Total params: {total:N0} | " +
               $"{what}: {trainable:N0} ({100.0 * trainable / total:F2}%) | Params per rank: {session.ParamBytesPerRank} bytes{gathered}";
    }
}
