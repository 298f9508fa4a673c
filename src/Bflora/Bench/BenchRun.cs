using System.Diagnostics;
using System.Text.Json;
using Bflora.Training;
using TorchSharp;

namespace Bflora.Bench;

/// <summary>One bench line: the JSON name, its value, the goal (null = reported only) and how to compare.</summary>
public sealed record BenchItem(string Name, double Value, double? Goal, bool AtMost, string Note)
{
    public string Verdict => Goal is not double g ? "" : (AtMost ? Value <= g : Value >= g) ? "met" : "NOT met";
    public string GoalText => Goal is not double g ? "(reported)" : (AtMost ? "≤ " : "≥ ") + g.ToString("0.##");
}

/// <summary>
/// `bflora bench`: the performance issue's nine ratios (and the 2-rank ratio with recompute), measured in one run so
/// that each ratio compares timings taken under the same machine load. --quick shrinks every measurement to seconds (for tests; its numbers mean little).
/// </summary>
public static class BenchRun
{
    /// <summary>The JSON names, in the issue's order.</summary>
    public static readonly string[] Names =
    {
        "matmul_bf16_gflops", "copy_gbps", "bitflip_vs_copy", "bitflip_philox_vs_copy", "bitflip_vs_reference",
        "flip_overhead", "mfu", "shard_efficiency", "shard_efficiency_checkpointed", "shard_param_memory",
    };

    /// <param name="self">How to start this CLI again, for the 1- and 2-rank worker jobs.</param>
    /// <param name="overrides">`--set` strings for the training configs of every training measurement.</param>
    public static IReadOnlyList<BenchItem> Run(bool quick, IReadOnlyList<string> self, IReadOnlyList<string> overrides,
        TextWriter log)
    {
        var items = new List<BenchItem>();
        var total = Stopwatch.StartNew();
        void Add(BenchItem item)
        {
            items.Add(item);
            log.WriteLine($"  {item.Name} = {item.Value:G4}   [{total.Elapsed.TotalSeconds:F0} s]");
        }

        log.WriteLine($"bench: {torch.get_num_threads()} torch threads, {Environment.ProcessorCount} cores{(quick ? ", quick" : "")}");
        int matmulSize = quick ? 512 : 2048, matmulReps = quick ? 2 : 5;
        double firstGflops = KernelBench.MatmulGflops(matmulSize, matmulReps);
        log.WriteLine($"  matmul (first) = {firstGflops:G4} GFLOP/s");

        var flips = KernelBench.FlipVsCopy(quick ? 1L << 20 : 128L << 20, quick ? 2 : 12);
        Add(new("copy_gbps", flips.CopyGbps, null, false, $"copy_ of {flips.Bytes >> 20} MiB bf16, read+write"));
        Add(new("bitflip_vs_copy", flips.CopySeconds / flips.FastSeconds, 0.7, false, "fast kernel, exp+frac 0.5^16, zero-out"));
        Add(new("bitflip_philox_vs_copy", flips.CopySeconds / flips.PhiloxSeconds, null, false, "Philox kernel, same flips"));
        Add(new("bitflip_vs_reference", KernelBench.FastVsReference(quick ? 1L << 16 : 4L << 20, quick ? 2 : 4), 5, false,
            "fast kernel ÷ element-by-element reference"));

        string scratch = Path.Combine(Path.GetTempPath(), $"bflora-bench-{Environment.ProcessId}");
        try
        {
            // 30 pairs, not 10: the flips cost ~25 ms of a ~200 ms step, and the best of 10 steps on a loaded VM still
            // carries tens of ms of neighbours' load (measured, 3 runs each: 0.20–0.41 with 10 pairs, 0.13–0.16 with 30).
            var demo = TrainShape.Demo(quick);
            var (on, off) = TrainBench.FlipsOnVsOff(demo, scratch, overrides, warmup: quick ? 1 : 2, steps: quick ? 2 : 30);
            Add(new("flip_overhead", on / off - 1, 0.15, true,
                $"demo model: {on * 1e3:F0} ms/step on, {off * 1e3:F0} ms off"));

            // The peak is the best matmul rate seen in this run, measured again right before the MFU steps: a peak
            // caught during a burst of load from other processes would inflate MFU past 1.
            double gflops = Math.Max(firstGflops, KernelBench.MatmulGflops(matmulSize, matmulReps));
            Add(new("matmul_bf16_gflops", gflops, null, false, $"{matmulSize}³ bf16 matmul, all threads, best of the run"));
            var m100 = TrainShape.M100(quick);
            using (var session = TrainBench.Open(m100, flips: true, scratch, overrides))
            {
                double tokensPerSecond = TrainBench.TokensPerSecond(session, warmup: 1, steps: quick ? 2 : 4);
                long n = session.Args.NonEmbeddingParams;
                var t = session.Config.Training;
                Add(new("mfu", TrainBench.Mfu(n, tokensPerSecond, gflops * 1e9), 0.40, false,
                    $"{m100.Name}: N = {n / 1e6:F1}M, seq {t.SeqLen} × batch {t.LocalBatchSize}, {tokensPerSecond:F0} tokens/s"));
            }
        }
        finally
        {
            if (Directory.Exists(scratch)) Directory.Delete(scratch, recursive: true);
        }

        AddShard(quick, self, overrides, Add, log);
        log.WriteLine($"bench: {total.Elapsed.TotalSeconds:F0} s in all");
        return items.OrderBy(i => Array.IndexOf(Names, i.Name)).ToList();
    }

    static void AddShard(bool quick, IReadOnlyList<string> self, IReadOnlyList<string> overrides, Action<BenchItem> add,
        TextWriter log)
    {
        var timeout = TimeSpan.FromMinutes(quick ? 3 : 6);
        if (ShardBench.FindMpirun() is null)
        {
            log.WriteLine("  mpirun not found (apt-get install openmpi-bin libopenmpi-dev): no 2-rank measurement");
            add(new("shard_efficiency", double.NaN, 0.8, false, "needs mpirun"));
            add(new("shard_efficiency_checkpointed", double.NaN, null, false, "needs mpirun"));
            add(new("shard_param_memory", double.NaN, 0.55, true, "needs mpirun"));
            return;
        }
        // One rank keeps every activation, so the like-for-like 2-rank run keeps them too; the seed's recompute
        // (the default) adds a forward pass per step, which the second ratio shows.
        var one = ShardBench.Launch(self, 1, quick, overrides, timeout);
        var two = ShardBench.Launch(self, 2, quick, overrides.Append("parallelism.activation_checkpointing=false").ToList(), timeout);
        var recomputed = ShardBench.Launch(self, 2, quick, overrides, timeout);
        add(new("shard_efficiency", two.TokensPerSecond / one.TokensPerSecond, 0.8, false,
            $"{two.World} ranks × {two.Threads} thread: {two.TokensPerSecond:F0} tokens/s; {one.World} rank × {one.Threads} threads: {one.TokensPerSecond:F0}; activations kept"));
        add(new("shard_efficiency_checkpointed", recomputed.TokensPerSecond / one.TokensPerSecond, null, false,
            $"2 ranks recomputing each block in backward (the default): {recomputed.TokensPerSecond:F0} tokens/s"));
        add(new("shard_param_memory", (double)two.ParameterBytes / one.ParameterBytes, 0.55, true,
            $"per-rank parameter bytes {two.ParameterBytes >> 20} MiB at 2 ranks vs {one.ParameterBytes >> 20} MiB at 1"));
    }

    /// <summary>The JSON object {"name": value, ...} (NaN, which JSON lacks, as null).</summary>
    public static string ToJson(IReadOnlyList<BenchItem> items)
    {
        var values = items.ToDictionary(i => i.Name, i => double.IsFinite(i.Value) ? (double?)i.Value : null);
        return JsonSerializer.Serialize(values, new JsonSerializerOptions { WriteIndented = true });
    }

    public static void PrintTable(IReadOnlyList<BenchItem> items, TextWriter output)
    {
        output.WriteLine($"{"name",-30} {"value",10}  {"goal",-10} {"",-7} note");
        foreach (var i in items)
            output.WriteLine($"{i.Name,-30} {i.Value,10:G4}  {i.GoalText,-10} {i.Verdict,-7} {i.Note}");
    }
}
