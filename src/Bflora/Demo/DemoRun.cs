using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using Bflora.Config;
using Bflora.Devices;
using Bflora.Eval;
using Bflora.Training;

namespace Bflora.Demo;

/// <summary>What `bflora demo` was asked for.</summary>
/// <param name="Device">"cpu" or "cuda" for every stage; null keeps the configs' own (cpu).</param>
public sealed record DemoOptions(string OutputFolder, bool Quick, string? Device = null);

public sealed record DemoResult(EvalResult Clean, EvalResult Bitflip, EvalResult BitflipLora, TrainResult LoraTraining,
    double Seconds);

/// <summary>
/// The whole story on the bundled corpus, in the seed's order: pretrain a small Llama-3-architecture model (flips off),
/// save it in HF layout, profile it for the zero-out thresholds, evaluate clean and with flips, fine-tune LoRA
/// adapters with the flips on, and evaluate again with flips + LoRA. Every evaluation reads the held-out split that
/// neither training stage sees, with the flip masks of step 0.
/// </summary>
public static class DemoRun
{
    /// <summary>--quick: the same path, short enough for the tests.</summary>
    private static readonly string[] QuickPretrain = { "training.steps=120", "training.log_freq=20", "training.save_freq=120" };
    private static readonly string[] QuickLora = { "training.steps=60", "training.log_freq=20", "training.save_freq=60" };

    public static DemoResult Execute(DemoOptions options, TextWriter output, Action<string> warn,
        Func<BfloraConfig, TrainOptions, TrainResult> train)
    {
        var clock = Stopwatch.StartNew();
        // An unusable device is refused before any stage runs or any folder is cleared.
        if (options.Device is { } device) ComputeDevice.Resolve(device);
        var onDevice = options.Device is { } d ? new[] { $"training.device=\"{d}\"" } : Array.Empty<string>();
        string outDir = Path.GetFullPath(options.OutputFolder);
        TrainRun.EnsureWritable(outDir);
        // Each run of the demo starts over: its two training stages are its own folders.
        string pretrainDir = Path.Combine(outDir, "pretrain"), loraDir = Path.Combine(outDir, "lora");
        foreach (string stage in new[] { pretrainDir, loraDir })
            if (Directory.Exists(stage)) Directory.Delete(stage, recursive: true);
        string corpus = BundledFiles.Find(Path.Combine("data", "corpus"));
        int samples = options.Quick ? 32 : 128;

        output.WriteLine($"[1/6] Pretraining the demo model on {corpus} (flips off)");
        var pretrainConfig = Load("demo_pretrain.toml", $"data.path=\"{corpus}\"",
            onDevice.Concat(options.Quick ? QuickPretrain : []));
        var pretrained = train(pretrainConfig, new TrainOptions(pretrainDir, TrainSplitOnly: true));
        string modelFolder = pretrained.LastCheckpoint;

        output.WriteLine($"[2/6] Profiling |x| and |w| of the pretrained model ({modelFolder})");
        var loraOverrides = new List<string> { $"data.path=\"{corpus}\"", $"model.hf_model_path=\"{modelFolder}\"" };
        loraOverrides.AddRange(onDevice);
        var profile = ProfileRun.Execute(Load("demo.toml", loraOverrides), samples, output, warn, EvalSplit.HeldOut);
        loraOverrides.Add($"bitflip.x_zero_out_t={profile.SuggestedX.ToString("R", CultureInfo.InvariantCulture)}");
        loraOverrides.Add($"bitflip.w_zero_out_t={profile.SuggestedW.ToString("R", CultureInfo.InvariantCulture)}");
        if (options.Quick) loraOverrides.AddRange(QuickLora);
        var loraConfig = Load("demo.toml", loraOverrides);

        output.WriteLine("[3/6] Evaluating the clean model on the held-out split");
        var clean = EvalRun.Execute(loraConfig, new EvalRequest(samples, Split: EvalSplit.HeldOut), output, warn);
        output.WriteLine("[4/6] Evaluating with bit flips (no LoRA)");
        var bitflip = EvalRun.Execute(loraConfig, new EvalRequest(samples, Bitflip: true, Split: EvalSplit.HeldOut), output, warn);

        output.WriteLine("[5/6] Bitflip-aware LoRA fine-tuning (base frozen, flips on)");
        var lora = train(loraConfig, new TrainOptions(loraDir, TrainSplitOnly: true));

        output.WriteLine("[6/6] Evaluating with bit flips + the trained LoRA adapter");
        var bitflipLora = EvalRun.Execute(loraConfig,
            new EvalRequest(samples, Bitflip: true, Adapter: lora.LastCheckpoint, Split: EvalSplit.HeldOut), output, warn);

        var result = new DemoResult(clean, bitflip, bitflipLora, lora, clock.Elapsed.TotalSeconds);
        AtomicFile.WriteAllText(Path.Combine(outDir, "results.json"), ToJson(result));
        if (lora.Rows.Count > 0) LossPlot.Write(Path.Combine(outDir, "loss.png"), lora.Rows, "bitflip-aware LoRA fine-tuning (demo)");
        PrintSummary(output, loraConfig, result, outDir);
        return result;
    }

    private static BfloraConfig Load(string file, string extra, IEnumerable<string>? more) =>
        Load(file, new[] { extra }.Concat(more ?? Array.Empty<string>()).ToList());

    private static BfloraConfig Load(string file, IReadOnlyList<string> overrides) =>
        BfloraConfig.Load(BundledFiles.Find(Path.Combine("configs", file)), overrides);

    public static string ToJson(DemoResult r)
    {
        JsonNode Eval(EvalResult e) => JsonNode.Parse(e.ToJson())!;
        var json = new JsonObject
        {
            ["clean"] = Eval(r.Clean),
            ["bitflip"] = Eval(r.Bitflip),
            ["bitflip_lora"] = Eval(r.BitflipLora),
            ["train"] = new JsonObject { ["steps"] = r.LoraTraining.Steps, ["tokens_per_s"] = r.LoraTraining.TokensPerSecond },
            ["seconds"] = r.Seconds,
        };
        return json.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true });
    }

    private static void PrintSummary(TextWriter output, BfloraConfig lora, DemoResult r, string outDir)
    {
        var b = lora.Bitflip;
        output.WriteLine();
        output.WriteLine($"Demo results (held-out split, {r.Clean.Sequences} sequences × {lora.Training.SeqLen} tokens; " +
                         $"flips: w_p_exp={b.WPExp:G4} w_p_frac={b.WPFrac:G4} x_p_exp={b.XPExp:G4} x_p_frac={b.XPFrac:G4}, " +
                         $"zero-out x {b.XZeroOutT:G4} / w {b.WZeroOutT:G4})");
        output.WriteLine();
        output.WriteLine("| Condition | Loss (CE) | Perplexity |");
        output.WriteLine("|---|---|---|");
        output.WriteLine($"| Clean | {r.Clean.Loss:F4} | {r.Clean.Perplexity:F2} |");
        output.WriteLine($"| Bitflip, no LoRA | {r.Bitflip.Loss:F4} | {r.Bitflip.Perplexity:F2} |");
        output.WriteLine($"| Bitflip + LoRA (r={lora.Lora.R}, {r.LoraTraining.Steps} steps) | {r.BitflipLora.Loss:F4} | {r.BitflipLora.Perplexity:F2} |");
        double gap = r.Bitflip.Loss - r.Clean.Loss;
        if (gap > 0)
            output.WriteLine($"\nBit flips cost {gap:F3} nats; LoRA recovered {(r.Bitflip.Loss - r.BitflipLora.Loss) / gap:P0} of that.");
        output.WriteLine($"Wrote {Path.Combine(outDir, "results.json")} and loss.png in {r.Seconds:F0} s.");
    }
}
