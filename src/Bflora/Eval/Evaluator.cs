using System.Text.Json;
using System.Text.Json.Serialization;
using Bflora.Data;
using Bflora.Distributed;
using Bflora.Models.Llama3;
using static TorchSharp.torch;

namespace Bflora.Eval;

/// <summary>The eval JSON of DESIGN.md: mode, sequences, tokens, loss (token-weighted mean CE) and perplexity.</summary>
public sealed record EvalResult(
    [property: JsonPropertyName("mode")] string Mode,
    [property: JsonPropertyName("sequences")] int Sequences,
    [property: JsonPropertyName("tokens")] long Tokens,
    [property: JsonPropertyName("loss")] double Loss,
    [property: JsonPropertyName("perplexity")] double Perplexity)
{
    public string ToJson() => JsonSerializer.Serialize(this, new JsonSerializerOptions { WriteIndented = true });
}

/// <summary>
/// The seed's evaluation: the first N windows of a window stream, forward only, logits in fp32, cross-entropy summed
/// in fp64 over every target token; loss = sum / count, perplexity = exp(loss).
/// </summary>
public static class Evaluator
{
    public static EvalResult Run(Transformer model, WindowReader windows, int numSamples, int batchSize, string mode,
        Action<string>? warn = null, IEvalProgress? progress = null)
    {
        using var noGrad = no_grad();
        bool wasTraining = model.training;
        model.eval();
        // The sum stays on the model's device until the end: a read per batch would make the host wait for each
        // batch before queueing the next. Double additions in the same order give the same sum wherever they run.
        Tensor? lossSum = null;
        long tokens = 0;
        int sequences = 0;
        var batch = new List<int[]>(batchSize);
        while (sequences + batch.Count < numSamples && windows.TryNext(out var window))
        {
            batch.Add(window);
            if (batch.Count == batchSize) Flush();
        }
        Flush();
        progress?.End();
        if (wasTraining) model.train();
        Check(sequences, numSamples, windows, warn);
        double sum = lossSum!.item<double>();
        lossSum.Dispose();
        return Result(mode, sequences, tokens, sum);

        void Flush()
        {
            if (batch.Count == 0) return;
            using var scope = NewDisposeScope();
            var (inputs, labels) = Batches.ToTensors(batch.ToArray(), model.Device);
            var logits = model.call(inputs).to(ScalarType.Float32);
            var ce = nn.functional.cross_entropy(logits.view(-1, logits.shape[^1]), labels.view(-1),
                reduction: nn.Reduction.Sum);
            var sum = ce.to(ScalarType.Float64);
            if (lossSum is null) lossSum = sum.DetachFromDisposeScope();
            else lossSum.add_(sum);
            tokens += labels.numel();
            sequences += batch.Count;
            batch.Clear();
            progress?.Advance(sequences);
        }
    }

    /// <summary>
    /// <see cref="Run"/> on the sharded model of an mpirun job: the same batches of <paramref name="batchSize"/> windows,
    /// batch k·world + r computed by rank r in round k. Every rank reads the same windows, so all agree on the rounds;
    /// a rank short of a batch in the last round computes a stand-in and counts none of it. The per-batch fp32 sums
    /// are gathered and added in fp64 in batch order, as <see cref="Run"/> adds them. <paramref name="counting"/> hears,
    /// before each batch, how many of its windows are real.
    /// </summary>
    public static EvalResult RunSharded(FsdpModel fsdp, WindowReader windows, int numSamples, int batchSize, string mode,
        Action<string>? warn = null, Action<long>? counting = null)
    {
        using var noGrad = no_grad();
        var all = new List<int[]>();
        while (all.Count < numSamples && windows.TryNext(out var window)) all.Add(window);
        Check(all.Count, numSamples, windows, warn);
        var c = fsdp.Collectives;
        int world = c.WorldSize, batches = (all.Count + batchSize - 1) / batchSize;
        int rounds = (batches + world - 1) / world;
        var sums = new float[rounds];
        for (int round = 0; round < rounds; round++)
        {
            using var scope = NewDisposeScope();
            int first = (round * world + c.Rank) * batchSize;
            int count = Math.Clamp(all.Count - first, 0, batchSize);
            var batch = Enumerable.Range(0, batchSize)
                .Select(i => i < count ? all[first + i] : all[round * world * batchSize]).ToArray();
            var (inputs, labels) = Batches.ToTensors(batch);
            counting?.Invoke(count);
            sums[round] = fsdp.CrossEntropySum(inputs, labels, count).item<float>();
        }
        using var mine = tensor(sums);
        using var gathered = empty(rounds * world, ScalarType.Float32);
        c.AllGather(mine, gathered);
        // Round-major per rank: batch k·world + r sits at r·rounds + k.
        var perRank = gathered.data<float>().ToArray();
        double total = 0;
        for (int b = 0; b < batches; b++) total += perRank[b % world * rounds + b / world];
        return Result(mode, all.Count, (long)all.Count * windows.SeqLen, total);
    }

    private static void Check(int sequences, int numSamples, WindowReader windows, Action<string>? warn)
    {
        if (sequences == 0)
            throw new BfloraInputException(windows.TooShortMessage);
        if (sequences < numSamples)
            warn?.Invoke($"asked for {numSamples} samples but the data holds only {sequences} windows; evaluated all of them");
    }

    private static EvalResult Result(string mode, int sequences, long tokens, double lossSum)
    {
        double loss = lossSum / tokens;
        return new EvalResult(mode, sequences, tokens, loss, Math.Exp(loss));
    }
}
