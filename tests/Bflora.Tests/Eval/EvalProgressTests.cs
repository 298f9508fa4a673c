using Bflora.Config;
using Bflora.Data;
using Bflora.Eval;
using Bflora.Models;
using Bflora.Tests.Cli;
using Spectre.Console.Testing;
using Xunit;

namespace Bflora.Tests.Eval;

public sealed class EvalProgressTests
{
    private sealed class Recorder : IEvalProgress
    {
        public List<int> Advances { get; } = new();
        public int Ends { get; private set; }
        public int AdvancesAfterEnd { get; private set; }

        public void Advance(int sequences)
        {
            Advances.Add(sequences);
            if (Ends > 0) AdvancesAfterEnd++;
        }

        public void End() => Ends++;
    }

    [Theory]
    [InlineData(7, new[] { 2, 4, 6, 7 })]     // local batch 2: the short last batch counts what it holds
    [InlineData(4, new[] { 2, 4 })]
    public void The_evaluator_reports_every_batch_then_ends_once(int windows, int[] expected)
    {
        var config = BfloraConfig.Load(RepoPaths.Of("configs", "debug.toml"));
        var spec = ModelBuilder.Resolve(config);
        using var model = ModelBuilder.Build(config, spec.Args, spec.Folder);
        var tokenizer = ModelBuilder.CreateTokenizer(config, out _);
        using var reader = new WindowReader(new TextSource(RepoPaths.Of("data", "corpus")), tokenizer, config.Training.SeqLen);
        var recorder = new Recorder();
        var result = Evaluator.Run(model, reader, windows, config.Training.LocalBatchSize, "clean", progress: recorder);
        Assert.Equal(windows, result.Sequences);
        Assert.Equal(expected, recorder.Advances);
        Assert.Equal(1, recorder.Ends);
        Assert.Equal(0, recorder.AdvancesAfterEnd);
    }

    [Fact]
    public void The_terminal_bar_counts_the_windows_and_clears_itself()
    {
        var console = new TestConsole().Interactive().EmitAnsiSequences();
        using (var bar = new TerminalEvalProgress(console, "eval", total: 8))
        {
            bar.Advance(4);
            bar.Advance(8);
            bar.End();
            bar.Advance(9);   // after the end: ignored, no second display
        }
        string written = console.Output;
        Assert.Contains("eval", written);
        Assert.Contains("100%", written);
        Assert.DoesNotContain("112%", written);
        // AutoClear: the display erases its lines when it stops (ESC[2K), so the table after it starts on a clean line.
        Assert.EndsWith("\u001b[2K\u001b[?25h", written.TrimEnd('\n', '\r'));
    }

    [Fact]
    public void A_bar_that_never_saw_a_batch_ends_without_a_display()
    {
        var console = new TestConsole().Interactive().EmitAnsiSequences();
        new TerminalEvalProgress(console, "eval", total: 8).Dispose();
        Assert.Equal("", console.Output);
    }
}
