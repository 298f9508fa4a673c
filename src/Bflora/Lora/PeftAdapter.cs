using System.Text.Json;
using System.Text.Json.Nodes;
using Bflora.Checkpoints;
using Bflora.Models.Llama3;
using static TorchSharp.torch;

namespace Bflora.Lora;

/// <summary>The fields of a PEFT adapter_config.json that matter for loading.</summary>
public sealed record PeftAdapterConfig(int R, double LoraAlpha, IReadOnlyList<string> TargetModules, string BaseModel);

/// <summary>
/// LoRA adapters in Hugging Face PEFT's folder format for LlamaForCausalLM: adapter_model.safetensors with keys
/// <c>base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight</c> … and adapter_config.json. Inside, the model
/// keeps torchtitan's q/k row order, so lora_B of wq/wk is permuted to HF order on export and back on import (A acts
/// on the input side and needs no change).
/// </summary>
public static class PeftAdapter
{
    public const string WeightsFile = "adapter_model.safetensors";
    public const string ConfigFile = "adapter_config.json";
    private const string KeyPrefix = "base_model.model.";

    /// <summary>Writes the adapter of every converted layer with r &gt; 0 into <paramref name="folder"/>.</summary>
    public static void Save(string folder, ConvertedModel converted, ModelArgs args, double loraAlpha, string baseModel)
    {
        var layers = converted.Layers.Where(l => l.Layer.Rank > 0).ToList();
        if (layers.Count == 0) throw new InvalidOperationException("the model has no LoRA layers to save");
        Save(folder, layers.Select(l => (l.Name, (Tensor)l.Layer.LoraA!, (Tensor)l.Layer.LoraB!)).ToList(), args, loraAlpha, baseModel);
    }

    /// <summary>
    /// Writes adapters given as (torchtitan layer name, A, B) — e.g. gathered from the shards of a distributed run.
    /// </summary>
    public static void Save(string folder, IReadOnlyList<(string Name, Tensor A, Tensor B)> layers, ModelArgs args,
        double loraAlpha, string baseModel)
    {
        if (layers.Count == 0) throw new InvalidOperationException("the model has no LoRA layers to save");
        using var scope = NewDisposeScope();
        var tensors = new Dictionary<string, Tensor>();
        var targets = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var (name, a, bWeight) in layers)
        {
            string module = HfModule(name);
            targets.Add(Kind(module));
            var b = bWeight.detach();
            if (LlamaKeyMap.PermutedHeads(name + ".weight", args) is { } heads) b = LlamaKeyMap.TitanToHfRows(b, heads);
            tensors[$"{KeyPrefix}{module}.lora_A.weight"] = a.detach();
            tensors[$"{KeyPrefix}{module}.lora_B.weight"] = b;
        }
        Directory.CreateDirectory(folder);
        SafetensorsWriter.Write(Path.Combine(folder, WeightsFile), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        var config = new JsonObject
        {
            ["peft_type"] = "LORA",
            ["task_type"] = "CAUSAL_LM",
            ["r"] = layers[0].A.shape[0],
            ["lora_alpha"] = loraAlpha,
            ["lora_dropout"] = 0.0,
            ["bias"] = "none",
            ["fan_in_fan_out"] = false,
            ["target_modules"] = new JsonArray(targets.Select(t => (JsonNode)t!).ToArray()),
            ["base_model_name_or_path"] = baseModel,
            ["inference_mode"] = true,
        };
        AtomicFile.WriteAllText(Path.Combine(folder, ConfigFile), config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    public static PeftAdapterConfig ReadConfig(string folder)
    {
        string path = Path.Combine(folder, ConfigFile);
        // A full-training checkpoint sits where adapters do (checkpoints/step-N/) but is a whole model.
        if (!File.Exists(path) && File.Exists(Path.Combine(folder, HfConfig.FileName)))
            throw new BfloraInputException($"{folder} is not a PEFT adapter folder but a whole model (a training.trainable = \"full\" " +
                $"checkpoint): use it as the model, [model] hf_model_path = \"{folder}\" with init = \"pretrained\"");
        if (!File.Exists(path)) throw new BfloraInputException($"{folder} is not a PEFT adapter folder: no {ConfigFile}");
        if (!File.Exists(Path.Combine(folder, WeightsFile)))
            throw new BfloraInputException($"{folder} is not a PEFT adapter folder: no {WeightsFile}");
        JsonNode? parsed;
        // A repeated key is refused by the parser: JsonObject would otherwise meet it only when first indexed.
        try { parsed = JsonNode.Parse(File.ReadAllText(path), documentOptions: new JsonDocumentOptions { AllowDuplicateProperties = false }); }
        catch (JsonException e) { throw new BfloraInputException($"{path} is not valid JSON: {e.Message}"); }
        if (parsed is not JsonObject root) throw new BfloraInputException($"{path} must hold a JSON object");
        if (Text(root, "peft_type", path) is not "LORA")
            throw new BfloraInputException($"{path}: peft_type must be \"LORA\"");
        int r = Number<int>(root, "r", "an integer", path) ?? throw new BfloraInputException($"{path}: missing 'r'");
        double alpha = Number<double>(root, "lora_alpha", "a number", path)
                       ?? throw new BfloraInputException($"{path}: missing 'lora_alpha'");
        if (r <= 0) throw new BfloraInputException($"{path}: r must be positive, got {r}");
        if (!double.IsFinite(alpha)) throw new BfloraInputException($"{path}: lora_alpha must be finite, got {alpha}");
        IReadOnlyList<string> targets = root["target_modules"] switch
        {
            null => [],
            // PEFT's shorthand for every Linear but the output head: the layers bflora converts.
            JsonValue v when v.TryGetValue(out string? all) && all == "all-linear" => LlamaKeyMap.LinearModuleNames,
            JsonArray items => items.Select(n => n is JsonValue v && v.TryGetValue(out string? t) ? t
                : throw new BfloraInputException($"{path}: target_modules must be a list of strings")).ToList(),
            _ => throw new BfloraInputException(
                $"{path}: target_modules must be a list of module names or \"all-linear\" (a regex is not supported)"),
        };
        RefuseOtherVariants(root, path);
        return new PeftAdapterConfig(r, alpha, targets, Text(root, "base_model_name_or_path", path) ?? "");
    }

    /// <summary>
    /// PEFT options under which the same A and B mean another weight (DoRA's magnitudes, rsLoRA's α/√r, per-module
    /// ranks and alphas, LoRA biases, a subset of layers): applied as plain LoRA, W + (α/r)·B·A, they would give other
    /// numbers without a word, so they are refused.
    /// </summary>
    private static void RefuseOtherVariants(JsonObject root, string path)
    {
        foreach (var (key, what) in new[] { ("use_dora", "DoRA"), ("use_rslora", "rank-stabilised LoRA, scale α/√r"),
                                            ("lora_bias", "LoRA biases") })
        {
            bool on = root[key] switch
            {
                null => false,
                JsonValue v when v.TryGetValue(out bool b) => b,
                _ => throw new BfloraInputException($"{path}: '{key}' must be true or false"),
            };
            if (on) throw new BfloraInputException($"{path}: {key} is on ({what}); bflora applies only plain LoRA, W + (lora_alpha/r)·B·A");
        }
        foreach (string key in new[] { "rank_pattern", "alpha_pattern" })
            if (root[key] is JsonObject { Count: > 0 })
                throw new BfloraInputException($"{path}: {key} is set: bflora takes one r and one lora_alpha for every layer");
        if (root["layers_to_transform"] is not null)
            throw new BfloraInputException($"{path}: layers_to_transform is set: bflora applies an adapter to every layer it names");
    }

    /// <summary>
    /// The adapter's lora_A keys. Any other tensor (DoRA magnitudes, biases, saved modules, embedding adapters) would
    /// otherwise be left out without a word, so it is an error.
    /// </summary>
    internal static IEnumerable<string> LoraAKeys(SafetensorsFile file, string folder)
    {
        foreach (string key in file.Tensors.Keys)
        {
            if (key.EndsWith(".lora_A.weight", StringComparison.Ordinal)) yield return key;
            else if (!key.EndsWith(".lora_B.weight", StringComparison.Ordinal))
                throw new BfloraInputException($"{folder}: '{key}' is not a LoRA A or B weight (bflora applies plain LoRA only)");
        }
    }

    /// <summary>The number at <paramref name="key"/>; null when absent (or JSON null), an error when not such a number.</summary>
    private static T? Number<T>(JsonObject root, string key, string what, string path) where T : struct => root[key] switch
    {
        null => null,
        JsonValue v when v.TryGetValue(out T value) => value,
        _ => throw new BfloraInputException($"{path}: '{key}' must be {what}"),
    };

    private static string? Text(JsonObject root, string key, string path) => root[key] switch
    {
        null => null,
        JsonValue v when v.TryGetValue(out string? value) => value,
        _ => throw new BfloraInputException($"{path}: '{key}' must be a string"),
    };

    /// <summary>
    /// The adapter's (A, B) per torchtitan layer name (e.g. <c>layers.0.attention.wq</c>), B already in torchtitan row
    /// order, as tensors of <paramref name="dtype"/>. The caller disposes them.
    /// </summary>
    public static Dictionary<string, (Tensor A, Tensor B)> ReadWeights(string folder, ModelArgs args, ScalarType dtype)
    {
        var file = SafetensorsFile.Open(Path.Combine(folder, WeightsFile));
        var result = new Dictionary<string, (Tensor A, Tensor B)>();
        foreach (var key in LoraAKeys(file, folder).ToList())
        {
            if (!key.StartsWith(KeyPrefix, StringComparison.Ordinal))
                throw new BfloraInputException($"{folder}: '{key}' does not start with '{KeyPrefix}'");
            string module = key[KeyPrefix.Length..^".lora_A.weight".Length];
            string bKey = $"{KeyPrefix}{module}.lora_B.weight";
            if (!file.Tensors.ContainsKey(bKey))
                throw new BfloraInputException($"{folder}: '{key}' has no matching '{bKey}'");
            string name = TitanModule(module, folder);
            var a = file.Load(key, dtype);
            var b = file.Load(bKey, dtype);
            if (LlamaKeyMap.PermutedHeads(name + ".weight", args) is { } heads)
            {
                using var hfRows = b;
                b = LlamaKeyMap.HfToTitanRows(hfRows, heads);
            }
            result[name] = (a, b);
        }
        if (result.Count == 0) throw new BfloraInputException($"{folder}: {WeightsFile} holds no lora_A weights");
        return result;
    }

    /// <summary>Copies the adapter in <paramref name="folder"/> into the converted layers; every LoRA layer must be covered.</summary>
    public static PeftAdapterConfig Load(string folder, ConvertedModel converted, ModelArgs args)
    {
        var config = ReadConfig(folder);
        var loraLayers = converted.Layers.Where(l => l.Layer.Rank > 0).ToList();
        var weights = ReadWeights(folder, args, loraLayers.Count > 0 ? loraLayers[0].Layer.LoraA!.dtype : ScalarType.BFloat16);
        try
        {
            foreach (var extra in weights.Keys.Except(loraLayers.Select(l => l.Name)))
                throw new BfloraInputException($"{folder}: the adapter has '{extra}', which is not a LoRA layer of this model");
            using var noGrad = no_grad();
            foreach (var (name, layer) in loraLayers)
            {
                if (!weights.TryGetValue(name, out var ab))
                {
                    // An adapter of PEFT's target_modules = ["q_proj", "v_proj"] leaves the other kinds as they are: B = 0
                    // adds nothing. A layer of a kind it names but lacks means another model, which stays an error.
                    if (config.TargetModules.Count > 0 && !config.TargetModules.Contains(Kind(HfModule(name))))
                    {
                        layer.LoraB!.zero_();
                        continue;
                    }
                    throw new BfloraInputException($"{folder}: the adapter has no weights for '{name}'");
                }
                CopyChecked(layer.LoraA!, ab.A, name + ".lora_A", folder);
                CopyChecked(layer.LoraB!, ab.B, name + ".lora_B", folder);
            }
            return config;
        }
        finally
        {
            foreach (var (a, b) in weights.Values) { a.Dispose(); b.Dispose(); }
        }
    }

    /// <summary>HF module path (without <c>.weight</c>) of a torchtitan layer name.</summary>
    public static string HfModule(string titanName)
    {
        string hf = LlamaKeyMap.TitanToHf(titanName + ".weight");
        return hf[..^".weight".Length];
    }

    /// <summary>What target_modules names a module by: the last part of its HF path ("q_proj").</summary>
    private static string Kind(string hfModule) => hfModule[(hfModule.LastIndexOf('.') + 1)..];

    private static string TitanModule(string hfModule, string folder)
    {
        try
        {
            return LlamaKeyMap.HfToTitan(hfModule + ".weight") is { } titan
                ? titan[..^".weight".Length]
                : throw new BfloraInputException($"{folder}: '{hfModule}' cannot carry a LoRA adapter");
        }
        catch (ArgumentException e)
        {
            throw new BfloraInputException($"{folder}: {e.Message}");
        }
    }

    private static void CopyChecked(Tensor target, Tensor value, string name, string folder)
    {
        if (!target.shape.SequenceEqual(value.shape))
            throw new BfloraInputException($"{folder}: '{name}' has shape [{string.Join(", ", value.shape)}], " +
                                           $"the model expects [{string.Join(", ", target.shape)}]");
        target.copy_(value);
    }
}
