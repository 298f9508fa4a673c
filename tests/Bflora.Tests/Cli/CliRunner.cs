using System.Diagnostics;

namespace Bflora.Tests.Cli;

public sealed record CliResult(int ExitCode, string Stdout, string Stderr)
{
    public string[] StdoutLines => Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);

    public string[] StderrLines => Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
}

/// <summary>Runs the real CLI (the Bflora.Cli build beside the tests) as a child process, bounded by a timeout.</summary>
public static class CliRunner
{
    public static CliResult Run(string[] args, TimeSpan? timeout = null, string? workingDirectory = null,
        IReadOnlyDictionary<string, string>? environment = null)
    {
        var start = StartInfo(args, workingDirectory);
        foreach (var (name, value) in environment ?? new Dictionary<string, string>()) start.Environment[name] = value;
        using var process = Process.Start(start)!;
        return ChildProcess.Finish(process, timeout ?? TimeSpan.FromMinutes(3), $"bflora {string.Join(' ', args)}");
    }

    /// <summary>`dotnet Bflora.Cli.dll args` with both streams redirected, for a test that drives the process itself.</summary>
    public static ProcessStartInfo StartInfo(string[] args, string? workingDirectory = null)
    {
        var start = new ProcessStartInfo("dotnet")
        {
            WorkingDirectory = workingDirectory ?? RepoPaths.Root,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "Bflora.Cli.dll"));
        foreach (var a in args) start.ArgumentList.Add(a);
        start.Environment.Remove("BFLORA_DEBUG");
        // The CLI runs on the libtorch it was built with unless a test names another (a GPU machine may export one).
        start.Environment.Remove("BFLORA_LIBTORCH");
        return start;
    }
}

/// <summary>Waits for the tests' child processes, whatever they run.</summary>
public static class ChildProcess
{
    /// <summary>
    /// Reads a started child's stdout and stderr (redirected) as it writes them and waits for it to exit; one that
    /// outlives <paramref name="timeout"/> is killed with its own children, and the test fails there.
    /// </summary>
    public static CliResult Finish(Process process, TimeSpan timeout, string what)
    {
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(timeout))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{what} did not finish within {timeout.TotalSeconds} s");
        }
        process.WaitForExit();
        return new CliResult(process.ExitCode, stdout.Result, stderr.Result);
    }
}
