using System.Text.Json;
using System.Text.Json.Serialization;
using Bflora.Data;
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
        Action<string>? warn = null)
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
        if (wasTraining) model.train();
        if (sequences == 0)
            throw new BfloraInputException($"the data is shorter than one window of seq_len {windows.SeqLen} + 1 tokens");
        if (sequences < numSamples)
            warn?.Invoke($"asked for {numSamples} samples but the data holds only {sequences} windows; evaluated all of them");
        double loss = lossSum!.item<double>() / tokens;
        lossSum.Dispose();
        return new EvalResult(mode, sequences, tokens, loss, Math.Exp(loss));

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
        }
    }
}
