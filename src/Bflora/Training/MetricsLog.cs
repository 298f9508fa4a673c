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

    public static List<MetricsRow> Read(string outputFolder) => Read(outputFolder, out _);

    /// <summary>
    /// The rows in the file. A last line without its newline is a row a crash (or a full disk) cut short: it is left
    /// out, and <paramref name="cutShort"/> says so. Any other line that is not a row is an error naming it.
    /// </summary>
    private static List<MetricsRow> Read(string outputFolder, out bool cutShort)
    {
        string path = Path.Combine(outputFolder, FileName);
        cutShort = false;
        if (!File.Exists(path)) return [];
        string[] lines = File.ReadAllText(path).Split('\n');
        var rows = new List<MetricsRow>(lines.Length);
        for (int i = 0; i < lines.Length; i++)
        {
            if (lines[i].Length == 0) continue;
            try
            {
                rows.Add(JsonSerializer.Deserialize<MetricsRow>(lines[i]) ?? throw new JsonException("null"));
            }
            catch (JsonException) when (i == lines.Length - 1)
            {
                cutShort = true;
            }
            catch (JsonException e)
            {
                throw new BfloraInputException($"{path} line {i + 1} is not a metrics row: {e.Message}");
            }
        }
        return rows;
    }

    /// <summary>
    /// Drops rows after <paramref name="step"/> (a resumed run repeats the steps after its checkpoint) and a last row
    /// a crash cut short.
    /// </summary>
    public static void TruncateAfter(string outputFolder, long step)
    {
        var rows = Read(outputFolder, out bool cutShort);
        if (!cutShort && rows.All(r => r.Step <= step)) return;
        AtomicFile.WriteAllText(Path.Combine(outputFolder, FileName),
            string.Concat(rows.Where(r => r.Step <= step).Select(r => JsonSerializer.Serialize(r) + "\n")));
    }
}
