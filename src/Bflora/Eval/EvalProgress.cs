using Spectre.Console;

namespace Bflora.Eval;

/// <summary>Where an evaluation reports how far it got: after every batch, then once at the end.</summary>
public interface IEvalProgress
{
    /// <summary><paramref name="sequences"/> windows evaluated so far.</summary>
    void Advance(int sequences);

    /// <summary>The batches are done; what is printed next comes after the progress display, not inside it.</summary>
    void End();
}

/// <summary>
/// A transient Spectre.Console progress bar (windows, percentage, time left) on an interactive terminal's stderr, so
/// that an eval of a large model shows it is alive while stdout keeps exactly its table. The bar runs in its own
/// task, because the evaluator reports from inside its loop rather than running inside a display scope; it is
/// cleared when the eval ends.
/// </summary>
public sealed class TerminalEvalProgress : IEvalProgress, IDisposable
{
    private readonly IAnsiConsole _console;
    private readonly string _label;
    private readonly int _total;
    private readonly TaskCompletionSource _ended = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Task? _display;
    private ProgressTask? _task;

    public TerminalEvalProgress(IAnsiConsole console, string label, int total) =>
        (_console, _label, _total) = (console, label, total);

    /// <summary>A bar on stderr when stderr is an interactive terminal; otherwise null (logs and pipes stay plain).</summary>
    public static TerminalEvalProgress? ForStderr(string label, int total)
    {
        if (Console.IsErrorRedirected) return null;
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        return console.Profile.Capabilities.Interactive ? new TerminalEvalProgress(console, label, total) : null;
    }

    /// <summary>The bar appears with the first batch, so the model's loading and its warnings print as plain lines.</summary>
    public void Advance(int sequences)
    {
        if (_ended.Task.IsCompleted) return;
        _task ??= Start();
        _task.Value = sequences;
    }

    public void End()
    {
        _ended.TrySetResult();
        _display?.GetAwaiter().GetResult();
    }

    public void Dispose() => End();

    private ProgressTask Start()
    {
        var started = new TaskCompletionSource<ProgressTask>(TaskCreationOptions.RunContinuationsAsynchronously);
        _display = _console.Progress()
            .AutoClear(true)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(),
                new RemainingTimeColumn())
            .StartAsync(async ctx =>
            {
                started.SetResult(ctx.AddTask(Markup.Escape(_label), maxValue: _total));
                await _ended.Task;
            });
        return started.Task.GetAwaiter().GetResult();
    }
}
