using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Bflora.Training;

/// <summary>One row of metrics.jsonl (DESIGN.md): loss is the mean over the micro-batches since the previous row.</summary>
public sealed record MetricsRow(
    [property: JsonPropertyName("step")] long Step,
    [property: JsonPropertyName("loss")] double Loss,
    [property: JsonPropertyName("lr")] double Lr,
    [property: JsonPropertyName("grad_norm")] double GradNorm,
    [property: JsonPropertyName("tokens_per_s")] double TokensPerSecond)
{
    /// <summary>The original's log line, with the grad norm added.</summary>
    public string LogLine(long totalSteps, double elapsedSeconds) => string.Create(CultureInfo.InvariantCulture,
        $"Step {Step}/{totalSteps} | Loss: {Loss:F4} | LR: {Lr:0.00e+00} | Grad norm: {GradNorm:F3} | " +
        $"Tokens/s: {TokensPerSecond:F0} | Elapsed: {elapsedSeconds:F2}");
}

/// <summary>OUT/metrics.jsonl: appended one line per logged step, flushed at once so a crash keeps what was logged.</summary>
public static class MetricsLog
{
    public const string FileName = "metrics.jsonl";

    public static void Append(string outputFolder, MetricsRow row) =>
        File.AppendAllText(Path.Combine(outputFolder, FileName), JsonSerializer.Serialize(row) + "\n");

    public static List<MetricsRow> Read(string outputFolder)
    {
        string path = Path.Combine(outputFolder, FileName);
        if (!File.Exists(path)) return [];
        return File.ReadAllLines(path).Where(l => l.Length > 0)
            .Select(l => JsonSerializer.Deserialize<MetricsRow>(l) ?? throw new InvalidDataException($"{path}: empty row"))
            .ToList();
    }

    /// <summary>Drops rows after <paramref name="step"/>: a resumed run repeats the steps after its checkpoint.</summary>
    public static void TruncateAfter(string outputFolder, long step)
    {
        var rows = Read(outputFolder);
        if (rows.All(r => r.Step <= step)) return;
        AtomicFile.WriteAllText(Path.Combine(outputFolder, FileName),
            string.Concat(rows.Where(r => r.Step <= step).Select(r => JsonSerializer.Serialize(r) + "\n")));
    }
}
