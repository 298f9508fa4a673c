using System.Globalization;
using System.Text.Json;
using System.Text.Unicode;
using Bflora.Models.Llama3;

namespace Bflora.Checkpoints;

/// <summary>Reads and writes a Hugging Face Llama <c>config.json</c> as <see cref="ModelArgs"/>.</summary>
public static class HfConfig
{
    public const string FileName = "config.json";

    /// <summary>Reads <paramref name="path"/> (a config.json, or a model folder holding one).</summary>
    public static ModelArgs Read(string path)
    {
        if (Directory.Exists(path)) path = Path.Combine(path, FileName);
        if (!File.Exists(path)) throw new CheckpointFormatException(path, "file not found");
        byte[] bytes = File.ReadAllBytes(path);
        // JsonDocument checks the UTF-8 of a string only when it is read, and then throws InvalidOperationException.
        if (!Utf8.IsValid(bytes)) throw new CheckpointFormatException(path, "not valid UTF-8");
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(bytes);
        }
        catch (JsonException e)
        {
            throw new CheckpointFormatException(path, $"not valid JSON ({e.Message.Split('\n')[0]})", e);
        }
        using (doc)
        {
            try
            {
                return Read(path, doc.RootElement);
            }
            catch (InvalidOperationException e)
            {
                // An escaped lone surrogate ("\ud800") passes the parser and fails only when the string is read.
                throw new CheckpointFormatException(path, $"holds a string that is not valid text ({e.Message})", e);
            }
        }
    }

    private static ModelArgs Read(string path, JsonElement root)
    {
        if (root.ValueKind != JsonValueKind.Object) throw new CheckpointFormatException(path, "not a JSON object");
        string? modelType = OptionalString(path, root, "model_type");
        if (modelType is not null && modelType != "llama")
            throw new CheckpointFormatException(path, $"model_type is '{modelType}', only 'llama' is supported");

        int dim = RequiredInt(path, root, "hidden_size");
        int heads = RequiredInt(path, root, "num_attention_heads");
        if (heads <= 0) throw new CheckpointFormatException(path, $"num_attention_heads is {heads}");
        if (OptionalInt(path, root, "head_dim") is { } headDim && headDim != dim / heads)
            throw new CheckpointFormatException(path,
                $"head_dim {headDim} differs from hidden_size/num_attention_heads = {dim / heads}, which this model needs");

        var args = new ModelArgs(
            Dim: dim,
            NLayers: RequiredInt(path, root, "num_hidden_layers"),
            NHeads: heads,
            NKvHeads: OptionalInt(path, root, "num_key_value_heads") ?? heads,
            FfnHidden: RequiredInt(path, root, "intermediate_size"),
            VocabSize: RequiredInt(path, root, "vocab_size"),
            RopeTheta: OptionalDouble(path, root, "rope_theta") ?? 10000.0,
            NormEps: OptionalDouble(path, root, "rms_norm_eps") ?? 1e-6,
            RopeScaling: ReadRopeScaling(path, root),
            TieEmbeddings: OptionalBool(path, root, "tie_word_embeddings") ?? false,
            MaxSeqLen: OptionalInt(path, root, "max_position_embeddings") ?? 2048);
        CheckSizes(path, args);
        return args;
    }

    /// <summary>Sizes a model can be built with; anything else would fail deep inside the model with a torch error.</summary>
    private static void CheckSizes(string path, ModelArgs a)
    {
        foreach (var (key, value) in new[] { ("hidden_size", a.Dim), ("num_hidden_layers", a.NLayers),
                     ("num_key_value_heads", a.NKvHeads), ("intermediate_size", a.FfnHidden), ("vocab_size", a.VocabSize),
                     ("max_position_embeddings", a.MaxSeqLen) })
            if (value <= 0) throw new CheckpointFormatException(path, $"'{key}' is {value}, expected a positive integer");
        if (a.Dim % a.NHeads != 0 || a.NHeads % a.NKvHeads != 0 || a.Dim / a.NHeads % 2 != 0)
            throw new CheckpointFormatException(path, $"hidden_size {a.Dim}, num_attention_heads {a.NHeads} and " +
                $"num_key_value_heads {a.NKvHeads} do not divide into whole, even-sized heads");
        foreach (var (key, value) in new[] { ("rope_theta", a.RopeTheta), ("rms_norm_eps", a.NormEps) })
            if (!(value > 0 && double.IsFinite(value)))
                throw new CheckpointFormatException(path, $"'{key}' is {value}, expected a positive number");
    }

    private static RopeScaling? ReadRopeScaling(string path, JsonElement root)
    {
        if (!root.TryGetProperty("rope_scaling", out var rs) || rs.ValueKind == JsonValueKind.Null) return null;
        if (rs.ValueKind != JsonValueKind.Object) throw new CheckpointFormatException(path, "rope_scaling is not an object");
        // Older configs name the kind "type"; both spellings mean the same thing.
        string? kind = OptionalString(path, rs, "rope_type") ?? OptionalString(path, rs, "type");
        if (kind != "llama3")
            throw new CheckpointFormatException(path, $"rope_scaling type '{kind}' is not supported (only 'llama3')");
        return new RopeScaling(
            Factor: RequiredDouble(path, rs, "factor"),
            LowFreqFactor: RequiredDouble(path, rs, "low_freq_factor"),
            HighFreqFactor: RequiredDouble(path, rs, "high_freq_factor"),
            OriginalMaxPositions: RequiredInt(path, rs, "original_max_position_embeddings"));
    }

    /// <summary>Writes a config.json that HF transformers loads as LlamaForCausalLM with bf16 weights, atomically.</summary>
    public static void Write(string path, ModelArgs args, int bosTokenId, int eosTokenId)
    {
        AtomicFile.Write(path, stream =>
        {
            using var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
            json.WriteStartObject();
            json.WriteStartArray("architectures");
            json.WriteStringValue("LlamaForCausalLM");
            json.WriteEndArray();
            json.WriteString("model_type", "llama");
            json.WriteNumber("hidden_size", args.Dim);
            json.WriteNumber("num_hidden_layers", args.NLayers);
            json.WriteNumber("num_attention_heads", args.NHeads);
            json.WriteNumber("num_key_value_heads", args.NKvHeads);
            json.WriteNumber("head_dim", args.HeadDim);
            json.WriteNumber("intermediate_size", args.FfnHidden);
            json.WriteNumber("vocab_size", args.VocabSize);
            json.WriteNumber("max_position_embeddings", args.MaxSeqLen);
            json.WriteNumber("rope_theta", args.RopeTheta);
            json.WriteNumber("rms_norm_eps", args.NormEps);
            if (args.RopeScaling is { } rs)
            {
                json.WriteStartObject("rope_scaling");
                json.WriteString("rope_type", "llama3");
                json.WriteNumber("factor", rs.Factor);
                json.WriteNumber("low_freq_factor", rs.LowFreqFactor);
                json.WriteNumber("high_freq_factor", rs.HighFreqFactor);
                json.WriteNumber("original_max_position_embeddings", rs.OriginalMaxPositions);
                json.WriteEndObject();
            }
            else
            {
                json.WriteNull("rope_scaling");
            }
            json.WriteBoolean("tie_word_embeddings", args.TieEmbeddings);
            json.WriteString("hidden_act", "silu");
            json.WriteBoolean("attention_bias", false);
            json.WriteBoolean("mlp_bias", false);
            json.WriteNumber("bos_token_id", bosTokenId);
            json.WriteNumber("eos_token_id", eosTokenId);
            json.WriteString("torch_dtype", "bfloat16");
            json.WriteEndObject();
        });
    }

    /// <summary>
    /// Throws <see cref="ArgumentException"/> listing every architecture field where the checkpoint's config differs
    /// from the configured flavor. A flavor vocabulary of 0 ("the tokenizer's size") matches any; the RoPE scaling and
    /// context length are run settings, not weights, so they are not compared.
    /// </summary>
    public static void EnsureMatches(ModelArgs flavor, ModelArgs fromConfig)
    {
        var diffs = new List<string>();
        void Compare<T>(string field, T want, T have) where T : notnull
        {
            if (!want.Equals(have))
                diffs.Add($"{field} {Format(want)} (flavor) vs {Format(have)} (config.json)");
        }
        Compare("hidden_size", flavor.Dim, fromConfig.Dim);
        Compare("num_hidden_layers", flavor.NLayers, fromConfig.NLayers);
        Compare("num_attention_heads", flavor.NHeads, fromConfig.NHeads);
        Compare("num_key_value_heads", flavor.NKvHeads, fromConfig.NKvHeads);
        Compare("intermediate_size", flavor.FfnHidden, fromConfig.FfnHidden);
        if (flavor.VocabSize != 0) Compare("vocab_size", flavor.VocabSize, fromConfig.VocabSize);
        Compare("tie_word_embeddings", flavor.TieEmbeddings, fromConfig.TieEmbeddings);
        if (!Close(flavor.RopeTheta, fromConfig.RopeTheta)) Compare("rope_theta", flavor.RopeTheta, fromConfig.RopeTheta);
        if (!Close(flavor.NormEps, fromConfig.NormEps)) Compare("rms_norm_eps", flavor.NormEps, fromConfig.NormEps);
        if (diffs.Count > 0)
            throw new ArgumentException($"config.json does not match the flavor: {string.Join("; ", diffs)}");
    }

    // config.json stores floats as decimal text, so a value may come back one ulp off.
    private static bool Close(double a, double b) => Math.Abs(a - b) <= 1e-9 * Math.Max(Math.Abs(a), Math.Abs(b));

    private static string Format(object value) =>
        value is double d ? d.ToString("R", CultureInfo.InvariantCulture) : value.ToString()!.ToLowerInvariant();

    private static JsonElement? Get(JsonElement obj, string key) =>
        obj.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    private static int RequiredInt(string path, JsonElement obj, string key) =>
        OptionalInt(path, obj, key) ?? throw new CheckpointFormatException(path, $"missing '{key}'");

    private static double RequiredDouble(string path, JsonElement obj, string key) =>
        OptionalDouble(path, obj, key) ?? throw new CheckpointFormatException(path, $"missing '{key}'");

    private static int? OptionalInt(string path, JsonElement obj, string key) => Get(obj, key) switch
    {
        null => null,
        { ValueKind: JsonValueKind.Number } v when v.TryGetInt32(out int i) => i,
        var v => throw new CheckpointFormatException(path, $"'{key}' is {v.Value.GetRawText()}, expected an integer"),
    };

    private static double? OptionalDouble(string path, JsonElement obj, string key) => Get(obj, key) switch
    {
        null => null,
        { ValueKind: JsonValueKind.Number } v => v.GetDouble(),
        var v => throw new CheckpointFormatException(path, $"'{key}' is {v.Value.GetRawText()}, expected a number"),
    };

    private static bool? OptionalBool(string path, JsonElement obj, string key) => Get(obj, key) switch
    {
        null => null,
        { ValueKind: JsonValueKind.True } => true,
        { ValueKind: JsonValueKind.False } => false,
        var v => throw new CheckpointFormatException(path, $"'{key}' is {v.Value.GetRawText()}, expected true or false"),
    };

    private static string? OptionalString(string path, JsonElement obj, string key) => Get(obj, key) switch
    {
        null => null,
        { ValueKind: JsonValueKind.String } v => v.GetString(),
        var v => throw new CheckpointFormatException(path, $"'{key}' is {v.Value.GetRawText()}, expected a string"),
    };
}
