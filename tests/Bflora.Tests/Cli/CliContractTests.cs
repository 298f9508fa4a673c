using Xunit;

namespace Bflora.Tests.Cli;

public class CliContractTests
{
    [Fact]
    public void Help_lists_all_six_commands()
    {
        var r = CliRunner.Run(new[] { "--help" });
        Assert.Equal(0, r.ExitCode);
        foreach (var command in new[] { "demo", "train", "eval", "plan", "bench", "export" })
            Assert.Contains(command, r.Stdout);
    }

    [Fact]
    public void Usage_lines_name_the_command_the_user_types()
    {
        var r = CliRunner.Run(new[] { "train", "--help" });
        Assert.Equal(0, r.ExitCode);
        Assert.Contains("Usage:\n  bflora train [options]", r.Stdout.ReplaceLineEndings("\n"));
        Assert.DoesNotContain("Bflora.Cli", r.Stdout);
    }

    [Theory]
    [InlineData("eval", "--config")]
    [InlineData("train", "--config")]
    [InlineData("plan", "--config")]
    public void A_missing_required_option_is_one_error_line_and_exit_2(string command, string option)
    {
        var r = CliRunner.Run(new[] { command });
        Assert.Equal(2, r.ExitCode);
        var line = Assert.Single(r.StderrLines);
        Assert.StartsWith("error:", line);
        Assert.Contains(option, line);
    }

    [Fact]
    public void An_unknown_option_is_one_error_line_and_exit_2()
    {
        var r = CliRunner.Run(new[] { "eval", "--config", "configs/debug.toml", "--frobnicate" });
        Assert.Equal(2, r.ExitCode);
        Assert.StartsWith("error:", Assert.Single(r.StderrLines));
    }

    [Theory]
    [InlineData("frob")]
    [InlineData("eval", "--frobnicate")]
    public void An_unknown_token_is_named_even_when_other_errors_come_with_it(params string[] args)
    {
        var r = CliRunner.Run(args);
        Assert.Equal(2, r.ExitCode);
        Assert.Equal($"error: unknown command or argument '{args[^1]}' (see --help)", Assert.Single(r.StderrLines));
    }

    [Theory]
    [InlineData("error: --num-samples takes a whole number up to 2,147,483,647, not 'x'", "eval", "--config", "configs/debug.toml", "--num-samples", "x")]
    [InlineData("error: --steps takes a whole number up to 2,147,483,647, not '99999999999'", "train", "--config", "configs/debug.toml", "--steps", "99999999999")]
    [InlineData("error: --bitflip-seed takes a whole number (64-bit), not '1.5'", "eval", "--config", "configs/debug.toml", "--bitflip-seed", "1.5")]
    [InlineData("error: --peak-tflops takes a number, not 'zz'", "bench", "--throughput", "--peak-tflops", "zz")]
    public void A_value_of_the_wrong_kind_is_named_in_words(string expected, params string[] args)
    {
        var r = CliRunner.Run(args);
        Assert.Equal(2, r.ExitCode);
        Assert.Equal(expected, Assert.Single(r.StderrLines));
    }

    [Theory]
    [InlineData("--batch", "2")]
    [InlineData("--peak-tflops", "900")]
    public void A_throughput_option_without_the_throughput_is_refused(string option, string value)
    {
        var r = CliRunner.Run(new[] { "bench", "--quick", option, value });
        Assert.Equal(2, r.ExitCode);
        var line = Assert.Single(r.StderrLines);
        Assert.StartsWith($"error: {option} applies to the throughput only", line);
    }

    [Fact]
    public void A_bad_config_value_is_one_error_line_naming_the_key_and_exit_2()
    {
        var r = CliRunner.Run(new[] { "eval", "--config", "configs/debug.toml", "--set", "training.seq_len=0" });
        Assert.Equal(2, r.ExitCode);
        var line = Assert.Single(r.StderrLines);
        Assert.StartsWith("error:", line);
        Assert.Contains("training.seq_len", line);
    }

    [Fact]
    public void A_missing_config_file_is_one_error_line_and_exit_2()
    {
        var r = CliRunner.Run(new[] { "eval", "--config", "configs/none-such.toml" });
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("none-such.toml", Assert.Single(r.StderrLines));
    }
}
