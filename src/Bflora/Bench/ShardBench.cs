using System.Diagnostics;
using System.Text.Json;
using Bflora.Distributed;
using Bflora.Training;

namespace Bflora.Bench;

/// <summary>What one bench worker job measured (rank 0's view).</summary>
public sealed record WorkerResult(int World, int Threads, double TokensPerSecond, long ParameterBytes);

/// <summary>
/// 2 ranks × 1 thread against 1 rank × 2 threads, same global batch: each side is a child process of the bflora CLI
/// (the hidden `bench-worker` command), the 2-rank one under `mpirun -n 2`, so MPI starts in a fresh process exactly as
/// in `mpirun -n 2 ./bflora train`.
/// </summary>
public static class ShardBench
{
    /// <summary>The worker's part: start the runtime for this job's world, time LoRA steps, print one JSON line (rank 0).</summary>
    public static int RunWorker(bool quick, IReadOnlyList<string> overrides, TextWriter output)
    {
        var collectives = DistributedRuntime.Start();
        var shape = TrainShape.M100(quick);
        string scratch = Path.Combine(Path.GetTempPath(), $"bflora-bench-{Environment.ProcessId}");
        try
        {
            using var session = TrainBench.Open(shape, flips: true, scratch, overrides,
                new CollectivesGradientSync(collectives));
            double tokensPerSecond = TrainBench.TokensPerSecond(session, warmup: 1, steps: quick ? 2 : 4);
            var result = new WorkerResult(collectives.WorldSize, TorchSharp.torch.get_num_threads(), tokensPerSecond,
                session.ParamBytesPerRank);
            if (collectives.Rank == 0) output.WriteLine(JsonSerializer.Serialize(result));
            return 0;
        }
        finally
        {
            Directory.Delete(scratch, recursive: true);
        }
    }

    /// <summary>The path of mpirun on PATH, or null.</summary>
    public static string? FindMpirun() =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries)
        .Select(dir => Path.Combine(dir, "mpirun")).FirstOrDefault(File.Exists);

    /// <summary>
    /// Runs the worker with <paramref name="ranks"/> ranks; <paramref name="self"/> is how to start this CLI
    /// (executable, then any leading arguments such as the dll for `dotnet`).
    /// </summary>
    public static WorkerResult Launch(IReadOnlyList<string> self, int ranks, bool quick, IReadOnlyList<string> overrides,
        TimeSpan timeout)
    {
        var command = self.Concat(new[] { "bench-worker" }).Concat(quick ? new[] { "--quick" } : [])
            .Concat(overrides.SelectMany(o => new[] { "--set", o })).ToList();
        ProcessStartInfo start;
        if (ranks == 1)
        {
            start = new ProcessStartInfo(command[0]);
            foreach (var a in command.Skip(1)) start.ArgumentList.Add(a);
        }
        else
        {
            string mpirun = FindMpirun() ?? throw new InvalidOperationException("mpirun not found");
            start = new ProcessStartInfo(mpirun);
            // --bind-to none: each rank may use its share of the cores (Open MPI binds small jobs to one core each).
            foreach (var a in new[] { "-n", ranks.ToString(), "--oversubscribe", "--bind-to", "none" }.Concat(command))
                start.ArgumentList.Add(a);
            start.Environment["OMPI_ALLOW_RUN_AS_ROOT"] = "1";
            start.Environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1";
            // Shared memory without CMA, which containers without CAP_SYS_PTRACE refuse.
            start.Environment["OMPI_MCA_btl_vader_single_copy_mechanism"] = "none";
        }
        start.RedirectStandardOutput = true;
        start.RedirectStandardError = true;
        start.UseShellExecute = false;
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(timeout))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"bench worker ({ranks} ranks) did not finish within {timeout.TotalSeconds:F0} s");
        }
        process.WaitForExit();
        // Under mpirun, .NET may put a terminal escape sequence before the line: read from the brace on.
        string? line = stdout.Result.Split('\n').Where(l => l.Contains("{\"World\"")).Select(l => l[l.IndexOf('{')..])
            .LastOrDefault();
        if (process.ExitCode != 0 || line is null)
            throw new InvalidOperationException(
                $"bench worker ({ranks} ranks) failed with exit code {process.ExitCode}: {stderr.Result.Trim()}");
        return JsonSerializer.Deserialize<WorkerResult>(line)!;
    }
}
