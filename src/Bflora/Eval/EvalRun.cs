using Bflora.Bitflip;
using Bflora.Config;
using Bflora.Data;
using Bflora.Devices;
using Bflora.Distributed;
using Bflora.Lora;
using Bflora.Models;
using static TorchSharp.torch;

namespace Bflora.Eval;

/// <summary>What `bflora eval` was asked for.</summary>
/// <param name="Adapter">A PEFT adapter folder to apply (with flips only if <paramref name="Bitflip"/> is set).</param>
/// <param name="Split">The seed's first windows of the data, or the held-out split (the demo).</param>
public sealed record EvalRequest(int NumSamples = 256, bool Bitflip = false, long? BitflipSeed = null, string? Adapter = null,
    EvalSplit Split = EvalSplit.Head);

/// <summary>
/// The eval command's whole path: config → tokenizer → model → windows → <see cref="Evaluator"/> → table. Given
/// collectives of more than one rank (an mpirun job), the model is sharded over them (FSDP, as in training) and the
/// batches are spread over the ranks; rank 0 alone should be handed a real <paramref name="output"/>.
/// </summary>
public static class EvalRun
{
    /// <param name="progress">Hears of every batch of a single-process eval (the CLI's bar on a terminal).</param>
    public static EvalResult Execute(BfloraConfig config, EvalRequest request, TextWriter output, Action<string> warn,
        ICollectives? collectives = null, IEvalProgress? progress = null)
    {
        if (request.NumSamples <= 0) throw new BfloraInputException("--num-samples must be positive");
        var (tokenizer, args, modelFolder) = ModelBuilder.Resolve(config);
        var device = ComputeDevice.Resolve(config.Training.Device);
        // Without base_seed the original's eval flips with 42; an adapter was trained with the trainer's 0.
        var flips = request.Bitflip
            ? config.Bitflip.ToFlipSettings(request.BitflipSeed, unsetSeed: request.Adapter is null ? 42 : 0)
            : FlipSettings.Off;
        if (request.Bitflip && !config.Bitflip.AnyFlip) warn("--bitflip with every [bitflip] probability at 0: only zero-out applies");
        var adapter = request.Adapter is { } dir ? PeftAdapter.ReadConfig(dir) : null;
        // Eval never steps the optimizer, so every batch sees the masks of step 0.
        var options = new ConversionOptions(flips, adapter?.R ?? 0, adapter?.LoraAlpha ?? 1, config.Bitflip.SkipPatterns);
        bool converts = request.Bitflip || adapter is not null;
        string mode = request.Bitflip ? "bitflip" : "clean";
        using var windows = EvalWindows.Open(config, tokenizer, request.Split);

        EvalResult result;
        int layers;
        if (collectives is { WorldSize: > 1 })
        {
            using var fsdp = FsdpModel.Build(config, args, modelFolder, options, collectives, masterDtype: null, request.Adapter, converts);
            layers = fsdp.Converted.Layers.Count;
            result = Evaluator.RunSharded(fsdp, windows, request.NumSamples, config.Training.LocalBatchSize, mode, warn);
        }
        else
        {
            using var model = ModelBuilder.Build(config, args, modelFolder, device: device);
            layers = 0;
            if (converts)
            {
                var converted = BitFlipConverter.Convert(model, options);
                if (request.Adapter is not null) PeftAdapter.Load(request.Adapter, converted, args);
                ComputeDevice.EnsureParametersOn(model, device);
                layers = converted.Layers.Count;
            }
            result = Evaluator.Run(model, windows, request.NumSamples, config.Training.LocalBatchSize, mode, warn, progress);
        }
        string lora = adapter is null ? "no LoRA (r=0)" : $"LoRA r={adapter.R} alpha={adapter.LoraAlpha:G4} from {request.Adapter}";
        string condition = !converts ? "no bitflip, no LoRA (clean baseline)"
            : request.Bitflip
                ? $"bitflip ON, {lora} | w_p_exp={flips.WPExp:G4} w_p_frac={flips.WPFrac:G4} " +
                  $"x_p_exp={flips.XPExp:G4} x_p_frac={flips.XPFrac:G4} seed={flips.BaseSeed} | {layers} layers"
                : $"no bitflip, {lora}";
        PrintTable(output, config, result, condition);
        return result;
    }

    public static void PrintTable(TextWriter output, BfloraConfig config, EvalResult result, string condition)
    {
        string rule = new('=', 60);
        output.WriteLine(rule);
        output.WriteLine($"EVAL — {config.Model.Flavor ?? config.Model.HfModelPath} ({config.Name})");
        output.WriteLine($"condition: {condition}");
        output.WriteLine($"model: {config.Model.HfModelPath ?? $"random init, seed {config.Model.InitSeed}"}");
        output.WriteLine($"sequences: {result.Sequences}  (seq_len={config.Training.SeqLen})");
        output.WriteLine($"tokens: {result.Tokens:N0}");
        output.WriteLine($"loss (CE): {result.Loss:F4}");
        output.WriteLine($"perplexity: {result.Perplexity:F4}");
        output.WriteLine(rule);
        output.WriteLine();
        output.WriteLine("| Sequences | Tokens | Loss (CE) | Perplexity |");
        output.WriteLine("|---|---|---|---|");
        output.WriteLine($"| {result.Sequences} | {result.Tokens:N0} | {result.Loss:F4} | {result.Perplexity:F2} |");
    }
}
