using Bflora.Bitflip;
using Bflora.Data;
using Bflora.Distributed;
using Bflora.Models.Llama3;
using static TorchSharp.torch;

namespace Bflora.Eval;

/// <summary>
/// `eval --profile` on the sharded clean model of an mpirun job. Each rank counts the inputs of the batches it
/// computes (<see cref="Evaluator.RunSharded"/>, stand-in windows left out) and the weights in its own shards; the
/// histograms are then summed over ranks exactly (int64 counts) and the per-layer maxima taken over ranks, so every
/// number is the one-process profile's.
/// </summary>
internal static class ShardedProfile
{
    public static (EvalResult Eval, ProfileResult Profile) Run(FsdpModel fsdp, IReadOnlyList<string> skipPatterns,
        WindowReader windows, int numSamples, int batchSize, Action<string> warn)
    {
        using var profiler = Profiler.Attach(fsdp.Model, skipPatterns, countWeights: false);
        var weights = new MagnitudeHistogram();
        var weightMax = profiler.Names.Select(name => CountWeightShard(fsdp, name, weights)).ToArray();
        var eval = Evaluator.RunSharded(fsdp, windows, numSamples, batchSize, "clean", warn,
            counting: n => profiler.CountedWindows = n);
        profiler.CountedWindows = null;

        var c = fsdp.Collectives;
        var activations = SumOverRanks(c, profiler.Activations);
        var allWeights = SumOverRanks(c, weights);
        var local = profiler.Layers;
        // Bin values are bf16 numbers, exact in fp32, so the max-reduction is exact too.
        using var maxima = tensor(local.Select(l => l.Activation).Concat(weightMax.Select(MagnitudeHistogram.ValueOf)).ToArray());
        c.AllReduce(maxima, ReduceOp.Max);
        var m = maxima.data<float>().ToArray();
        var layers = local.Select((l, i) => new LayerMaxima(l.Name, m[i], m[local.Count + i])).ToList();
        return (eval, new ProfileResult(eval, layers, MagnitudeSummary.Of(activations), MagnitudeSummary.Of(allWeights)));
    }

    /// <summary>
    /// Counts this rank's part of a profiled Linear's weight (the embedding's matrix for a tied head) from the unit
    /// shard that holds it; returns the largest bin of that part.
    /// </summary>
    private static ushort CountWeightShard(FsdpModel fsdp, string layer, MagnitudeHistogram into)
    {
        string name = layer == "output" && fsdp.Model.Args.TieEmbeddings ? "tok_embeddings.weight" : layer + ".weight";
        foreach (var unit in fsdp.Units)
            foreach (var member in unit.Frozen.Members.Where(m => m.Name == name))
            {
                if (unit.Frozen.Overlap(member, fsdp.Collectives.Rank) is not (long _, long at, long count)) return 0;
                using var part = unit.FrozenShard.narrow(0, at, count);
                return into.AddTensor(part);
            }
        throw new InvalidOperationException($"no unit of the sharded model holds '{name}'");
    }

    /// <summary>
    /// Every rank's counts added up. Counts are int64 and reductions are fp32, so the counts travel as their bytes
    /// through an all-gather (which moves, never rounds) and are added here, in rank order.
    /// </summary>
    private static unsafe MagnitudeHistogram SumOverRanks(ICollectives c, MagnitudeHistogram mine)
    {
        const int words = MagnitudeHistogram.Bins * sizeof(long) / sizeof(float);
        using var send = empty(words, ScalarType.Float32);
        mine.Counts.CopyTo(new Span<long>(TensorBits.Pointer(send), MagnitudeHistogram.Bins));
        using var all = empty((long)words * c.WorldSize, ScalarType.Float32);
        c.AllGather(send, all);
        var counts = new ReadOnlySpan<long>(TensorBits.Pointer(all), MagnitudeHistogram.Bins * c.WorldSize);
        var sum = new MagnitudeHistogram();
        for (int r = 0; r < c.WorldSize; r++) sum.Add(counts.Slice(r * MagnitudeHistogram.Bins, MagnitudeHistogram.Bins));
        return sum;
    }
}
