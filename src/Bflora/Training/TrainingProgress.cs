using Spectre.Console;

namespace Bflora.Training;

/// <summary>Where the training loop reports: log lines, and (on a terminal) a live view after every step.</summary>
public interface ITrainingProgress
{
    void Line(string text);

    void Step(long step, long totalSteps, double loss, double tokensPerSecond, TimeSpan eta);
}

/// <summary>Plain lines only: redirected output, CI, tests.</summary>
public sealed class PlainProgress(TextWriter output) : ITrainingProgress
{
    public void Line(string text) => output.WriteLine(text);

    public void Step(long step, long totalSteps, double loss, double tokensPerSecond, TimeSpan eta) { }
}

/// <summary>
/// A Spectre.Console progress bar (step, loss, tokens/s, ETA) for an interactive terminal; the log lines still appear,
/// printed above the bar.
/// </summary>
public sealed class TerminalProgress : ITrainingProgress
{
    private readonly ProgressTask _task;

    private TerminalProgress(ProgressTask task) => _task = task;

    /// <summary>
    /// Runs <paramref name="body"/> inside a live progress display. The time left is the description's ETA, from this
    /// run's own steps: Spectre's estimate would take a resumed run's jump to its first step for speed.
    /// </summary>
    public static T Run<T>(long firstStep, long totalSteps, Func<ITrainingProgress, T> body) =>
        AnsiConsole.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask("training", maxValue: totalSteps);
                task.Value = firstStep;
                return body(new TerminalProgress(task));
            });

    public void Line(string text) => AnsiConsole.WriteLine(text);

    public void Step(long step, long totalSteps, double loss, double tokensPerSecond, TimeSpan eta)
    {
        _task.Value = step;
        _task.Description = Markup.Escape($"step {step}/{totalSteps} | loss {loss:F4} | {tokensPerSecond:F0} tok/s | ETA {eta:hh\\:mm\\:ss}");
    }
}
