using Bflora.Checkpoints;
using Bflora.Config;
using Bflora.Data;
using Bflora.Models.Llama3;
using static TorchSharp.torch;

namespace Bflora.Models;

/// <summary>
/// Turns the [model] section into a materialised Llama-3: dimensions from the flavor and/or the checkpoint's
/// config.json (checked against each other), built on the meta device, then filled one parameter at a time from the
/// safetensors files or from the seeded random init.
/// </summary>
/// <summary>What a config's [model] section resolves to before anything is allocated.</summary>
public sealed record ModelSpec(ITokenizer Tokenizer, ModelArgs Args, string? Folder);

public static class ModelBuilder
{
    /// <summary>The tokenizer, the dimensions and the local model folder (if any) of <paramref name="config"/>.</summary>
    public static ModelSpec Resolve(BfloraConfig config)
    {
        var tokenizer = CreateTokenizer(config, out string? folder);
        return new ModelSpec(tokenizer, ResolveArgs(config, tokenizer.VocabSize, folder), folder);
    }

    /// <summary>The tokenizer of [model]: bytes, or Llama-3 from the model folder (or the bundled tokenizer.json).</summary>
    public static ITokenizer CreateTokenizer(BfloraConfig config, out string? modelFolder)
    {
        modelFolder = ModelFolder(config);
        if (config.Model.Tokenizer == "byte") return Tokenizers.Create("byte", null);
        string? json = modelFolder is not null && File.Exists(Path.Combine(modelFolder, "tokenizer.json"))
            ? Path.Combine(modelFolder, "tokenizer.json")
            : null;
        if (json is null && config.Model.Init == "pretrained")
            throw new BfloraInputException($"model folder {modelFolder} has no tokenizer.json");
        return Tokenizers.Create("llama3", json ?? BundledFiles.Llama3Tokenizer);
    }

    /// <summary>The local folder of <c>hf_model_path</c> (hub ids resolve through the HF cache), or null if none is set.</summary>
    public static string? ModelFolder(BfloraConfig config) =>
        config.Model.HfModelPath is { } path ? HfHub.ResolveModel(path) : null;

    /// <summary>Model dimensions for this config, given the tokenizer's vocabulary (used where the flavor leaves it open).</summary>
    public static ModelArgs ResolveArgs(BfloraConfig config, int tokenizerVocab, string? modelFolder)
    {
        ModelArgs? fromFile = null;
        if (modelFolder is not null && File.Exists(Path.Combine(modelFolder, "config.json")))
            fromFile = HfConfig.Read(Path.Combine(modelFolder, "config.json"));
        else if (config.Model.Init == "pretrained")
            throw new BfloraInputException($"model folder {modelFolder} has no config.json");

        ModelArgs args;
        if (config.Model.Flavor is { } flavorName)
        {
            var flavor = Flavors.Get(flavorName);
            if (flavor.VocabSize == 0) flavor = flavor with { VocabSize = tokenizerVocab };
            if (fromFile is not null)
            {
                try { HfConfig.EnsureMatches(flavor, fromFile); }
                catch (ArgumentException e) { throw new BfloraInputException($"config.json does not match flavor '{flavorName}': {e.Message}"); }
                // The checkpoint knows its own RoPE scaling (Llama-3 vs 3.1) and context length.
                flavor = flavor with { RopeScaling = fromFile.RopeScaling, MaxSeqLen = fromFile.MaxSeqLen };
            }
            args = flavor;
        }
        else
        {
            args = fromFile ?? throw new BfloraInputException("set model.flavor, or model.hf_model_path to a folder with config.json");
        }

        if (args.VocabSize < tokenizerVocab)
            throw new BfloraInputException($"the tokenizer has {tokenizerVocab} ids but the model's vocabulary is {args.VocabSize}");
        args = config.Model.RopeScaling switch
        {
            "none" => args with { RopeScaling = null },
            // The original always applies Llama-3.1 scaling; this reproduces it for parity.
            "llama3" => args with { RopeScaling = args.RopeScaling ?? RopeScaling.Llama31 },
            _ => args,
        };
        if (config.Training.SeqLen > args.MaxSeqLen)
            throw new BfloraInputException($"training.seq_len {config.Training.SeqLen} exceeds the model's context of {args.MaxSeqLen}");
        return args;
    }

    /// <summary>
    /// Builds and materialises the model in bf16 on <paramref name="device"/> (default CPU): each parameter is read or
    /// generated on the CPU, then moved. <paramref name="linear"/> may substitute layers.
    /// </summary>
    public static Transformer Build(BfloraConfig config, ModelArgs args, string? modelFolder, LinearFactory? linear = null,
        Device? device = null)
    {
        var model = new Transformer(args, META, ScalarType.BFloat16, linear);
        try
        {
            ModelInit.Materialize(model, ParameterValues(config, args, modelFolder), device);
            model.eval();
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Where the parameters' bf16 values come from, one at a time by (name, shape): the seeded random init, or the
    /// pretrained checkpoint (its shape checked against the model's). Both are made on the CPU whatever device the
    /// model lives on, so a GPU run starts from exactly the weights a CPU run does.
    /// </summary>
    public static Func<string, long[], Tensor> ParameterValues(BfloraConfig config, ModelArgs args, string? modelFolder)
    {
        if (config.Model.Init == "random")
            return (name, shape) => ModelInit.RandomParameter(args, name, shape, config.Model.InitSeed, ScalarType.BFloat16);
        var checkpoint = LlamaHfCheckpoint.Open(modelFolder!, args);
        return (name, shape) =>
        {
            var info = checkpoint.Info(name);
            if (!info.Shape.SequenceEqual(shape))
                throw new CheckpointFormatException(info.File,
                    $"tensor '{info.Name}' has shape [{string.Join(", ", info.Shape)}], the model expects [{string.Join(", ", shape)}]");
            var value = empty(shape, ScalarType.BFloat16);
            checkpoint.Read(name, value);
            return value;
        };
    }
}
