using System.Buffers.Binary;
using System.Text;
using System.Text.Json.Nodes;
using Bflora.Checkpoints;
using Bflora.Config;
using Bflora.Data;
using Bflora.Tests.Checkpoints;
using Xunit;
using static TorchSharp.torch;

namespace Bflora.Tests.Reliability;

/// <summary>
/// Thousands of seeded mutations of a safetensors file, a config.json and a TOML config through their loaders: each
/// either loads or fails with the loader's own one-line exception, never IndexOutOfRange, NullReference, Overflow and
/// the like. A failure names the seed and iteration, so it replays exactly.
/// </summary>
public class LoaderFuzzTests
{
    internal static readonly string[] JsonTokens =
    [
        "{", "}", "[", "]", ",", ":", "\"", "null", "true", "-1", "0", "1e400", "-9223372036854775809",
        "18446744073709551616", "4294967296", "\"dtype\"", "\"shape\"", "\"data_offsets\"", "\"__metadata__\"", "\"BF16\"",
        "\"F32\"", "[0,0]", "[9223372036854775807]", "{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}", "\\u0000",
        "\"rope_scaling\"", "{\"rope_type\":\"llama3\"}", "\"hidden_size\"", "\"num_attention_heads\":0",
    ];

    private static readonly string[] TomlTokens =
    [
        "[", "]", "[[", "]]", "=", "\"", "'''", "\"\"\"", ".", "-", "+", "\n", "#", "1e999", "-0", "nan", "inf", "-inf",
        "99999999999999999999", "9223372036854775807", "0x7fffffffffffffff", "1979-05-27T07:32:00Z", "{ a = 1 }", "[1, \"a\"]",
        "true", "[training]", "[bitflip]", "seq_len", "steps = ", "\\u0000", "\\", "a.b.c = 1",
    ];

    /// <summary>One mutation: byte flips, a truncation, an inserted token, or a number replaced by a huge one.</summary>
    internal static byte[] Mutate(Random rng, byte[] input, string[] tokens, int from, int to, Encoding? tokenEncoding = null)
    {
        tokenEncoding ??= Encoding.UTF8;
        var bytes = input.ToList();
        int Pos() => rng.Next(from, Math.Min(to, bytes.Count) + 1);
        for (int edits = rng.Next(1, 4); edits > 0 && bytes.Count > from; edits--)
        {
            switch (rng.Next(4))
            {
                case 0:
                    int at = Math.Min(Pos(), bytes.Count - 1);
                    bytes[at] ^= (byte)(1 << rng.Next(8));
                    break;
                case 1:
                    int cut = Pos();
                    bytes.RemoveRange(cut, rng.Next(bytes.Count - cut + 1));
                    break;
                case 2:
                    bytes.InsertRange(Pos(), tokenEncoding.GetBytes(tokens[rng.Next(tokens.Length)]));
                    break;
                default:
                    int digit = bytes.FindIndex(Pos(), b => b is >= (byte)'0' and <= (byte)'9');
                    if (digit >= 0) bytes.InsertRange(digit, Encoding.UTF8.GetBytes(rng.Next(2) == 0 ? "99999999999999999999" : "-"));
                    break;
            }
        }
        return bytes.ToArray();
    }

    private static void ExpectClean<TAllowed>(int seed, int iteration, Action load) where TAllowed : Exception =>
        ExpectClean(seed, iteration, load, typeof(TAllowed));

    /// <summary>
    /// Runs <paramref name="load"/>: it may succeed or throw one of <paramref name="allowed"/> with a one-line message;
    /// anything else fails the test with the seed and iteration that replay it.
    /// </summary>
    internal static void ExpectClean(int seed, int iteration, Action load, params Type[] allowed)
    {
        try { load(); }
        catch (Exception e) when (allowed.Any(t => t.IsInstanceOfType(e)))
        {
            Assert.False(e.Message.Contains('\n'), $"seed {seed} iteration {iteration}: a message of two lines: {e.Message}");
        }
        catch (Exception e)
        {
            Assert.Fail($"seed {seed} iteration {iteration}: {e.GetType().Name}: {e.Message}\n{e.StackTrace}");
        }
    }

    [Fact]
    public void Mutated_safetensors_files_fail_only_with_checkpoint_format_errors()
    {
        using var dir = new TempFolder();
        string valid = dir.File("valid.safetensors");
        using (var scope = NewDisposeScope())
        {
            SafetensorsWriter.Write(valid, new Dictionary<string, Tensor>
            {
                ["a"] = ones(2, 3, dtype: ScalarType.BFloat16), ["b"] = arange(4, dtype: ScalarType.Float32),
                ["c"] = zeros(0, 5, dtype: ScalarType.Float16),
            }, new Dictionary<string, string> { ["format"] = "pt" });
        }
        byte[] original = File.ReadAllBytes(valid);
        int headerEnd = 8 + (int)BinaryPrimitives.ReadUInt64LittleEndian(original);
        const int seed = 8;
        var rng = new Random(seed);
        string file = dir.File("mutated.safetensors");
        for (int i = 0; i < 3000; i++)
        {
            byte[] bytes = Mutate(rng, original, JsonTokens, 8, headerEnd);
            // Mostly keep the length field true to the mutated header, so the mutations reach the JSON checks.
            if (rng.Next(4) != 0 && bytes.Length >= 8)
                BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)Math.Max(0, headerEnd - 8 + bytes.Length - original.Length));
            File.WriteAllBytes(file, bytes);
            ExpectClean<CheckpointFormatException>(seed, i, () =>
            {
                var opened = SafetensorsFile.Open(file);
                using var scope = NewDisposeScope();
                foreach (string name in opened.Tensors.Keys) opened.Load(name);
            });
        }
    }

    [Fact]
    public void Mutated_shard_indexes_fail_only_with_checkpoint_format_errors()
    {
        using var dir = new TempFolder();
        using (var scope = NewDisposeScope())
        {
            SafetensorsWriter.Write(dir.File("model-00001-of-00002.safetensors"),
                new Dictionary<string, Tensor> { ["a"] = ones(2, 3, dtype: ScalarType.BFloat16) });
            SafetensorsWriter.Write(dir.File("model-00002-of-00002.safetensors"),
                new Dictionary<string, Tensor> { ["b"] = ones(4, dtype: ScalarType.Float32) });
        }
        byte[] original = Encoding.UTF8.GetBytes("{\"metadata\": {\"total_size\": 28}, \"weight_map\": " +
            "{\"a\": \"model-00001-of-00002.safetensors\", \"b\": \"model-00002-of-00002.safetensors\"}}");
        const int seed = 8;
        var rng = new Random(seed);
        for (int i = 0; i < 1000; i++)
        {
            File.WriteAllBytes(dir.File(HfCheckpoint.IndexFileName), Mutate(rng, original, JsonTokens, 0, original.Length));
            ExpectClean<CheckpointFormatException>(seed, i, () => HfCheckpoint.Open(dir.Path));
        }
    }

    [Fact]
    public void Mutated_config_json_files_fail_only_with_checkpoint_format_errors()
    {
        using var dir = new TempFolder();
        string file = dir.File("config.json");
        HfConfig.Write(file, Bflora.Models.Llama3.Flavors.Get("1B"), 128000, 128001);
        byte[] original = File.ReadAllBytes(file);
        const int seed = 8;
        var rng = new Random(seed);
        for (int i = 0; i < 2000; i++)
        {
            File.WriteAllBytes(file, Mutate(rng, original, JsonTokens, 0, original.Length));
            ExpectClean<CheckpointFormatException>(seed, i, () => HfConfig.Read(file));
        }
    }

    [Fact]
    public void Mutated_tokenizer_json_files_fail_only_with_input_errors_and_what_loads_encodes()
    {
        // The real file's structure with its 256 single-byte tokens and a few merges: small enough to load thousands of times.
        var real = JsonNode.Parse(File.ReadAllText(RepoPaths.Of("data", "tokenizer", "llama3", "tokenizer.json")))!;
        var vocab = new JsonObject();
        foreach (var (key, id) in real["model"]!["vocab"]!.AsObject())
            if (id!.GetValue<int>() < 300) vocab[key] = id.GetValue<int>();
        var small = new JsonObject
        {
            ["added_tokens"] = new JsonArray(real["added_tokens"]!.AsArray().Take(2).Select(t => t!.DeepClone()).ToArray()),
            ["pre_tokenizer"] = real["pre_tokenizer"]!.DeepClone(),
            ["model"] = new JsonObject { ["type"] = "BPE", ["vocab"] = vocab },
        };
        using var dir = new TempFolder();
        string file = dir.File("tokenizer.json");
        byte[] original = Encoding.UTF8.GetBytes(small.ToJsonString());
        File.WriteAllBytes(file, original);
        const string text = "Hello, wörld! 12 été";
        var unbroken = Llama3Tokenizer.Load(file);
        Assert.Equal(text, unbroken.Decode(unbroken.Encode(text)));
        const int seed = 8;
        var rng = new Random(seed);
        for (int i = 0; i < 1500; i++)
        {
            File.WriteAllBytes(file, Mutate(rng, original, JsonTokens, 0, original.Length));
            ExpectClean<BfloraInputException>(seed, i, () => Llama3Tokenizer.Load(file).Encode(text));
        }
    }

    [Fact]
    public void Mutated_toml_configs_and_overrides_fail_only_with_config_errors()
    {
        byte[] original = File.ReadAllBytes(RepoPaths.Of("configs", "debug.toml"));
        const int seed = 8;
        var rng = new Random(seed);
        for (int i = 0; i < 2000; i++)
        {
            string text = Encoding.UTF8.GetString(Mutate(rng, original, TomlTokens, 0, original.Length));
            ExpectClean<ConfigException>(seed, i, () => BfloraConfig.FromText(text, "fuzz"));
            string assignment = Encoding.UTF8.GetString(
                Mutate(rng, Encoding.UTF8.GetBytes("training.seq_len=64"), TomlTokens, 0, 19));
            ExpectClean<ConfigException>(seed, i, () =>
                BfloraConfig.FromText(Encoding.UTF8.GetString(original), "fuzz", [assignment]));
        }
    }
}
