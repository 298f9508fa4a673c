using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Bflora.Config;
using Bflora.Data;
using Bflora.Bitflip;
using Bflora.Devices;
using Bflora.Distributed;
using Bflora.Lora;
using Bflora.Models;

namespace Bflora.Eval;

/// <summary>Percentiles and maximum of one histogram, as printed and written to JSON.</summary>
public sealed record MagnitudeSummary(float P50, float P99, float P999, float P9999, float Max)
{
    public static MagnitudeSummary Of(MagnitudeHistogram h) =>
        new(h.Percentile(0.5), h.Percentile(0.99), h.Percentile(0.999), h.Percentile(0.9999), h.Max);

    public JsonObject ToJson() => new()
    {
        ["p50"] = Number(P50), ["p99"] = Number(P99), ["p99.9"] = Number(P999), ["p99.99"] = Number(P9999), ["max"] = Number(Max),
    };

    /// <summary>
    /// A JSON float: the exact double of the bf16 value (a float32's shortest form would not equal it when read back as a
    /// double), and integral values keep a ".0" so that readers such as Python's json see a float, not an int.
    /// </summary>
    public static JsonNode Number(double v) =>
        double.IsFinite(v) && v == Math.Floor(v) && Math.Abs(v) < 1e15
            ? JsonNode.Parse(v.ToString("0.0", CultureInfo.InvariantCulture))!
            : JsonValue.Create(v);
}

/// <summary>The result of `eval --profile`: the clean eval over the same windows, then the magnitude profile.</summary>
public sealed record ProfileResult(
    EvalResult Eval, IReadOnlyList<LayerMaxima> Layers, MagnitudeSummary Activations, MagnitudeSummary Weights)
{
    public double SuggestedX => ProfileRun.SuggestedThreshold(Activations.Max);

    public double SuggestedW => ProfileRun.SuggestedThreshold(Weights.Max);

    public string ToJson()
    {
        var json = new JsonObject
        {
            ["mode"] = "profile",
            ["sequences"] = Eval.Sequences,
            ["tokens"] = Eval.Tokens,
            ["loss"] = Eval.Loss,
            ["perplexity"] = Eval.Perplexity,
            ["layers"] = Layers.Count,
            ["activations"] = Activations.ToJson(),
            ["weights"] = Weights.ToJson(),
            ["suggested"] = new JsonObject { ["x_zero_out_t"] = MagnitudeSummary.Number(SuggestedX),
                ["w_zero_out_t"] = MagnitudeSummary.Number(SuggestedW) },
            ["top_layers"] = new JsonObject
            {
                ["activations"] = Top(l => l.Activation),
                ["weights"] = Top(l => l.Weight),
            },
        };
        return json.ToJsonString(new JsonSerializerOptions { WriteIndented = true });

        JsonArray Top(Func<LayerMaxima, float> by) => new(ProfileRun.TopLayers(Layers, by)
            .Select(l => (JsonNode)new JsonObject { ["name"] = l.Name, ["max"] = MagnitudeSummary.Number(by(l)) }).ToArray());
    }
}

/// <summary>`bflora eval --profile`: the seed's profile mode on the clean model (no flips, no LoRA).</summary>
public static class ProfileRun
{
    /// <summary>
    /// Profiles the clean model; given collectives of more than one rank (an mpirun job) it is sharded over them, and
    /// rank 0 alone should be handed a real <paramref name="output"/>.
    /// </summary>
    public static ProfileResult Execute(BfloraConfig config, int numSamples, TextWriter output, Action<string> warn,
        EvalSplit split = EvalSplit.Head, ICollectives? collectives = null, IEvalProgress? progress = null)
    {
        if (numSamples <= 0) throw new BfloraInputException("--num-samples must be positive");
        var (tokenizer, args, modelFolder) = ModelBuilder.Resolve(config);
        using var windows = EvalWindows.Open(config, tokenizer, split);
        EvalResult eval;
        ProfileResult result;
        if (collectives is { WorldSize: > 1 })
        {
            var clean = new ConversionOptions(FlipSettings.Off, 0, 1, config.Bitflip.SkipPatterns);
            using var fsdp = FsdpModel.Build(config, args, modelFolder, clean, collectives, masterDtype: null, convert: false);
            (eval, result) = ShardedProfile.Run(fsdp, config.Bitflip.SkipPatterns, windows, numSamples,
                config.Training.LocalBatchSize, warn);
        }
        else
        {
            using var model = ModelBuilder.Build(config, args, modelFolder, device: ComputeDevice.Resolve(config.Training.Device));
            using var profiler = Profiler.Attach(model, config.Bitflip.SkipPatterns);
            eval = Evaluator.Run(model, windows, numSamples, config.Training.LocalBatchSize, "clean", warn, progress);
            result = new ProfileResult(eval, profiler.Layers, MagnitudeSummary.Of(profiler.Activations),
                MagnitudeSummary.Of(profiler.Weights));
        }
        EvalRun.PrintTable(output, config, eval, "no bitflip, no LoRA (clean baseline)");
        output.WriteLine();
        PrintProfile(output, config.Bitflip, result);
        return result;
    }

    /// <summary>
    /// The original's rule, 2^ceil(log2(max(m, 1e-9)) + 1), computed exactly: a power of two m = 2^k gives 2^(k+1)
    /// (128 → 256), any other m gives the second power of two above it (126.5 → 256, 3680 → 8192).
    /// </summary>
    public static double SuggestedThreshold(double max)
    {
        double m = Math.Max(max, 1e-9);
        if (double.IsInfinity(m)) return double.PositiveInfinity;
        int floorLog2 = Math.ILogB(m);
        int ceilLog2 = Math.ScaleB(1, floorLog2) == m ? floorLog2 : floorLog2 + 1;
        return Math.ScaleB(1, ceilLog2 + 1);
    }

    /// <summary>The five layers with the largest maxima, largest first (registration order among equals).</summary>
    public static IReadOnlyList<LayerMaxima> TopLayers(IReadOnlyList<LayerMaxima> layers, Func<LayerMaxima, float> by) =>
        layers.OrderByDescending(by).Take(5).ToList();

    private static void PrintProfile(TextWriter output, BitflipSection bitflip, ProfileResult result)
    {
        string rule = new('=', 60);
        output.WriteLine(rule);
        output.WriteLine($"PROFILE — |input| and |weight| of {result.Layers.Count} Linear layers (skip_patterns: " +
                         $"[{string.Join(", ", bitflip.SkipPatterns)}]); exact bf16 nearest-rank percentiles");
        Block("activations (Linear inputs)", result.Activations, l => l.Activation, "x_zero_out_t", bitflip.XZeroOutT, result.SuggestedX);
        Block("weights", result.Weights, l => l.Weight, "w_zero_out_t", bitflip.WZeroOutT, result.SuggestedW);
        output.WriteLine(rule);

        void Block(string title, MagnitudeSummary s, Func<LayerMaxima, float> by, string key, double? current, double suggested)
        {
            output.WriteLine();
            output.WriteLine($"{title}:");
            output.WriteLine($"  p50/p99/p99.9/p99.99: {G(s.P50, 3)} / {G(s.P99, 3)} / {G(s.P999, 3)} / {G(s.P9999, 3)}");
            output.WriteLine($"  global max |.|: {G(s.Max, 4)}");
            output.WriteLine("  top layers by max:");
            foreach (var layer in TopLayers(result.Layers, by)) output.WriteLine($"  {G(by(layer), 4),11}  {layer.Name}");
            // As in the original, OK means the threshold is at least the largest clean magnitude. Without a threshold
            // nothing is zeroed, which is OK too.
            string verdict = current is null || current >= s.Max ? "OK" : "TOO LOW";
            string shown = current is null ? "none" : G(current.Value, 4);
            output.WriteLine($"{key}: current={shown}  [{verdict}]  min-safe={G(s.Max, 4)}  suggested={G(suggested, 4)}");
        }
    }

    /// <summary>Python's "{:.Ng}": N significant digits, shortest form, lower-case exponent.</summary>
    private static string G(double v, int digits) =>
        v.ToString("G" + digits, CultureInfo.InvariantCulture).Replace("E", "e");
}
