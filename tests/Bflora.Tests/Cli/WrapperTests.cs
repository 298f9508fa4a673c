using System.Diagnostics;
using Xunit;

namespace Bflora.Tests.Cli;

/// <summary>The ./bflora wrapper: builds once, serialises concurrent starts, and leaves dotnet alone when up to date.</summary>
public sealed class WrapperTests : IDisposable
{
    private readonly string _fakeBin = Directory.CreateTempSubdirectory("bflora-fakebin-").FullName;

    public void Dispose() => Directory.Delete(_fakeBin, recursive: true);

    private static Process Start(string? pathPrefix)
    {
        var start = new ProcessStartInfo(Path.Combine(RepoPaths.Root, "bflora"))
        {
            WorkingDirectory = RepoPaths.Root,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        start.ArgumentList.Add("--help");
        if (pathPrefix is not null) start.Environment["PATH"] = pathPrefix + ":" + Environment.GetEnvironmentVariable("PATH");
        return Process.Start(start)!;
    }

    private static (int Code, string Out, string Err) Finish(Process p)
    {
        var result = ChildProcess.Finish(p, TimeSpan.FromMinutes(4), "./bflora");
        return (result.ExitCode, result.Stdout, result.Stderr);
    }

    [Fact]
    public void Concurrent_starts_both_succeed_and_an_up_to_date_build_never_calls_dotnet()
    {
        // Two starts at once on a stale build, as `mpirun -n 2 ./bflora` does: the lock lets one build while the
        // other waits and then finds the build done. A dotnet that logs each call before running the real one counts.
        string realDotnet = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':')
            .Select(d => Path.Combine(d, "dotnet")).First(File.Exists);
        string calls = Path.Combine(_fakeBin, "calls");
        string shim = Path.Combine(_fakeBin, "counting", "dotnet");
        Directory.CreateDirectory(Path.GetDirectoryName(shim)!);
        File.WriteAllText(shim, $"#!/bin/sh\necho call >> '{calls}'\nexec '{realDotnet}' \"$@\"\n");
        File.SetUnixFileMode(shim, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        string stamp = Path.Combine(RepoPaths.Root, ".build", "cli", ".stamp");   // a fresh clone has no build yet
        if (File.Exists(stamp)) File.Delete(stamp);
        var first = Start(Path.GetDirectoryName(shim));
        var second = Start(Path.GetDirectoryName(shim));
        foreach (var result in new[] { Finish(first), Finish(second) })
        {
            Assert.True(result.Code == 0, result.Err);
            Assert.Contains("demo", result.Out);
        }
        Assert.Single(File.ReadAllLines(calls));

        // A dotnet that only records being called: the stamp must keep the wrapper away from it.
        string marker = Path.Combine(_fakeBin, "called");
        File.WriteAllText(Path.Combine(_fakeBin, "dotnet"), $"#!/bin/sh\ntouch '{marker}'\nexit 1\n");
        File.SetUnixFileMode(Path.Combine(_fakeBin, "dotnet"), UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var upToDate = Finish(Start(_fakeBin));
        Assert.True(upToDate.Code == 0, upToDate.Err);
        Assert.False(File.Exists(marker), "the wrapper called dotnet although the build was up to date");
    }

    [Theory]
    [InlineData(null, "glibc.malloc.hugetlb=1")]
    [InlineData("glibc.malloc.arena_max=2", "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1")]
    [InlineData("glibc.malloc.hugetlb=0", "glibc.malloc.hugetlb=0")]
    public void The_cli_starts_with_huge_pages_for_glibcs_large_blocks_unless_the_user_chose(string? given, string expected)
    {
        // The wrapper in a folder of its own, with an up-to-date "build" that prints what it was started with.
        string root = Path.Combine(_fakeBin, "checkout");
        string cli = Path.Combine(root, ".build", "cli");
        Directory.CreateDirectory(cli);
        File.Copy(Path.Combine(RepoPaths.Root, "bflora"), Path.Combine(root, "bflora"));
        File.WriteAllText(Path.Combine(cli, "Bflora.Cli"), "#!/bin/sh\necho \"tunables=$GLIBC_TUNABLES\"\n");
        File.WriteAllText(Path.Combine(cli, ".stamp"), "");
        foreach (var file in new[] { Path.Combine(root, "bflora"), Path.Combine(cli, "Bflora.Cli") })
            File.SetUnixFileMode(file, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var start = new ProcessStartInfo(Path.Combine(root, "bflora")) { RedirectStandardOutput = true, RedirectStandardError = true };
        start.Environment.Remove("GLIBC_TUNABLES");
        if (given is not null) start.Environment["GLIBC_TUNABLES"] = given;
        var (code, stdout, stderr) = Finish(Process.Start(start)!);
        Assert.True(code == 0, stderr);
        Assert.Equal($"tunables={expected}", stdout.Trim());
    }
}
