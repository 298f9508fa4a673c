using System.Diagnostics;
using Bflora.Config;

namespace Bflora.Training;

/// <summary>What `bflora train` was asked for.</summary>
public sealed record TrainOptions(string OutputFolder, bool Resume = false, bool TrainSplitOnly = false);

/// <summary>How a run went: steps done, mean throughput of this process, the last checkpoint, all metrics rows.</summary>
public sealed record TrainResult(long Steps, double TokensPerSecond, string LastCheckpoint, IReadOnlyList<MetricsRow> Rows);

/// <summary>
/// The train command's whole path: check the output folder, open the session (and resume it), run the steps with
/// logging and checkpoints, then the final checkpoint and loss.png.
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
        EnsureWritable(output);
        string? resumeFrom = null;
        if (options.Resume)
        {
            resumeFrom = Checkpointer.Newest(output)
                         ?? throw new BfloraInputException($"--resume: no complete checkpoint under {Checkpointer.Root(output)}");
        }

        using var session = TrainingSession.Open(config, options.TrainSplitOnly, sync);
        if (resumeFrom is not null)
        {
            var state = Checkpointer.Load(resumeFrom, session);
            if (state.Step >= t.Steps)
                throw new BfloraInputException($"the checkpoint {resumeFrom} is at step {state.Step}; ask for more steps than that (--steps)");
            if (lead) MetricsLog.TruncateAfter(output, state.Step);
            progress.Line($"Resumed from {resumeFrom} at step {state.Step}");
        }
        else if (lead)
        {
            File.Delete(Path.Combine(output, MetricsLog.FileName));
        }
        progress.Line(Describe(session));

        var schedule = new LrSchedule(t.Lr, t.WarmupSteps, t.Steps);
        long firstStep = session.CompletedSteps + 1;
        var clock = Stopwatch.StartNew();
        long tokens = 0;
        double lossSum = 0;
        int lossCount = 0;
        string? lastCheckpoint = null;
        while (session.CompletedSteps < t.Steps)
        {
            var step = session.Step(schedule);
            tokens += step.Tokens;
            lossSum += step.Loss;
            lossCount++;
            double elapsed = clock.Elapsed.TotalSeconds;
            double tokensPerSecond = tokens / Math.Max(elapsed, 1e-9);
            var eta = TimeSpan.FromSeconds(elapsed / (step.Step - firstStep + 1) * (t.Steps - step.Step));
            progress.Step(step.Step, t.Steps, step.Loss, tokensPerSecond, eta);
            if (step.Step % t.LogFreq == 0)
            {
                var row = new MetricsRow(step.Step, lossSum / lossCount, step.Lr, step.GradNorm, tokensPerSecond);
                lossSum = 0;
                lossCount = 0;
                if (lead) MetricsLog.Append(output, row);
                progress.Line(row.LogLine(t.Steps, elapsed));
            }
            if (step.Step % t.SaveFreq == 0 || step.Step == t.Steps)
            {
                lastCheckpoint = Checkpointer.Save(output, session);
                progress.Line($"Saved checkpoint {lastCheckpoint}");
            }
        }
        double total = clock.Elapsed.TotalSeconds;
        var rows = MetricsLog.Read(output);
        if (lead && rows.Count > 0) LossPlot.Write(Path.Combine(output, "loss.png"), rows, $"{config.Name}: training loss");
        return new TrainResult(t.Steps, tokens / Math.Max(total, 1e-9), lastCheckpoint!, rows);
    }

    /// <summary>Fails before any work if the output folder cannot be created or written.</summary>
    public static void EnsureWritable(string folder)
    {
        try
        {
            Directory.CreateDirectory(folder);
            string probe = Path.Combine(folder, $".write-test-{Guid.NewGuid():N}");
            File.WriteAllText(probe, "");
            File.Delete(probe);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new BfloraInputException($"cannot write to the output folder {folder}: {e.Message}");
        }
    }

    private static string Describe(TrainingSession session)
    {
        long total = session.Model.parameters().Sum(p => p.numel());
        long trainable = session.Trainable.Sum(t => t.Param.numel());
        string what = session.FullTraining ? "Trainable (full)" : "Trainable (LoRA)";
        string gathered = session.Fsdp is { } fsdp ? $" (+ {fsdp.GatherBufferBytes} bytes of gather buffers)" : "";
        return $"Replaced {session.Converted.Layers.Count} Linear layers | Total params: {total:N0} | " +
               $"{what}: {trainable:N0} ({100.0 * trainable / total:F2}%) | Params per rank: {session.ParamBytesPerRank} bytes{gathered}";
    }
}
