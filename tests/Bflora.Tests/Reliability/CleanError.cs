using Bflora.Tests.Cli;
using Xunit;

namespace Bflora.Tests.Reliability;

/// <summary>The contract of issue #8 for one failed CLI run: exit 2 and exactly one "error:" line naming the cause.</summary>
internal static class CleanError
{
    /// <summary>Every reliability case is bounded: a hang fails the test (CliRunner throws) instead of blocking the suite.</summary>
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(90);

    /// <summary>Asserts the contract; each of <paramref name="mentions"/> must appear in the error line, which is returned.</summary>
    public static string Check(CliResult r, params string[] mentions)
    {
        string all = $"exit {r.ExitCode}\nstdout:\n{r.Stdout}\nstderr:\n{r.Stderr}";
        Assert.True(r.ExitCode == 2, all);
        NoCrash(r);
        string line = Assert.Single(r.StderrLines, l => l.Trim().Length > 0);
        Assert.StartsWith("error:", line);
        foreach (string m in mentions) Assert.True(line.Contains(m, StringComparison.Ordinal), $"'{m}' missing from: {line}");
        return line;
    }

    /// <summary>No stack trace or crash report in either stream: what an mpirun job must show besides its one error line.</summary>
    public static void NoCrash(CliResult r)
    {
        foreach (string stream in new[] { r.Stdout, r.Stderr })
        {
            Assert.DoesNotContain("Unhandled exception", stream);
            Assert.DoesNotContain("   at ", stream);
            Assert.DoesNotContain("internal failure", stream);
        }
    }
}
