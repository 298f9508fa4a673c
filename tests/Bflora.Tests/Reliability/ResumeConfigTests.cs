using Bflora.Tests.Checkpoints;
using Bflora.Tests.Cli;
using Xunit;

namespace Bflora.Tests.Reliability;

/// <summary>
/// `--resume` under a config that changed what the checkpoint means: another lora.r or model is refused with the
/// likely cause, another lora_alpha goes on with a warning of the rescale.
/// </summary>
public class ResumeConfigTests
{
    private static string[] Train(string output, int steps, params string[] more) =>
        ["train", "--config", RepoPaths.Of("configs", "debug.toml"), "--steps", steps.ToString(), "--out", output,
         "--set", "training.seq_len=32", "--set", "training.save_freq=2", .. more];

    [Fact]
    public void Another_rank_or_model_is_refused_with_its_likely_cause_and_another_alpha_warns()
    {
        using var dir = new TempFolder();
        string run = dir.File("run");
        var first = CliRunner.Run(Train(run, 2), CleanError.Timeout);
        Assert.True(first.ExitCode == 0, first.Stderr);

        var rank = CliRunner.Run([.. Train(run, 4, "--set", "lora.r=8"), "--resume"], CleanError.Timeout);
        CleanError.Check(rank, "has shape [4, 64], the model's [8, 64]", "(lora.r 4 in the checkpoint, 8 in the config)");
        var model = CliRunner.Run([.. Train(run, 4, "--set", "model.flavor=\"demo\""), "--resume"], CleanError.Timeout);
        CleanError.Check(model, "the model's [4, 256]", "(a checkpoint of another model?)");

        var alpha = CliRunner.Run([.. Train(run, 4, "--set", "lora.lora_alpha=16"), "--resume"], CleanError.Timeout);
        Assert.True(alpha.ExitCode == 0, alpha.Stderr);
        Assert.Equal("warning: lora.lora_alpha is 16, the checkpoint's 4: what the trained adapter adds is scaled ×4 from here on",
            Assert.Single(alpha.StdoutLines, l => l.StartsWith("warning:", StringComparison.Ordinal)));
        // The same alpha resumes without a word.
        var same = CliRunner.Run([.. Train(run, 5, "--set", "lora.lora_alpha=16"), "--resume"], CleanError.Timeout);
        Assert.True(same.ExitCode == 0, same.Stderr);
        Assert.DoesNotContain("warning", same.Stdout + same.Stderr);
    }
}
