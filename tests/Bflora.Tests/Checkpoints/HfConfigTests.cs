using Bflora.Checkpoints;
using Bflora.Models.Llama3;
using Xunit;

namespace Bflora.Tests.Checkpoints;

public class HfConfigTests
{
    private const string Llama31_8B = """
        {
          "architectures": ["LlamaForCausalLM"],
          "attention_bias": false,
          "bos_token_id": 128000,
          "eos_token_id": [128001, 128008, 128009],
          "hidden_act": "silu",
          "hidden_size": 4096,
          "intermediate_size": 14336,
          "max_position_embeddings": 131072,
          "model_type": "llama",
          "num_attention_heads": 32,
          "num_hidden_layers": 32,
          "num_key_value_heads": 8,
          "rms_norm_eps": 1e-05,
          "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                           "original_max_position_embeddings": 8192, "rope_type": "llama3"},
          "rope_theta": 500000.0,
          "tie_word_embeddings": false,
          "torch_dtype": "bfloat16",
          "vocab_size": 128256
        }
        """;

    [Fact]
    public void ReadsAnHfLlamaConfig()
    {
        using var dir = new TempFolder();
        File.WriteAllText(dir.File("config.json"), Llama31_8B);

        var args = HfConfig.Read(dir.Path);

        Assert.Equal(Flavors.Get("8B") with { RopeScaling = RopeScaling.Llama31 }, args);
        HfConfig.EnsureMatches(Flavors.Get("8B"), args);
    }

    [Theory]
    [InlineData("1B")]
    [InlineData("70B")]
    [InlineData("debug")]
    public void WrittenConfigReadsBackEqual(string flavor)
    {
        using var dir = new TempFolder();
        var args = Flavors.Get(flavor) with { VocabSize = 512, MaxSeqLen = 4096 };
        string path = dir.File("config.json");

        HfConfig.Write(path, args, bosTokenId: 1, eosTokenId: 2);

        Assert.Equal(args, HfConfig.Read(path));
        string text = File.ReadAllText(path);
        Assert.Contains("\"LlamaForCausalLM\"", text);
        Assert.Contains("\"torch_dtype\": \"bfloat16\"", text);
        Assert.Contains("\"eos_token_id\": 2", text);
        Assert.Single(Directory.GetFiles(dir.Path));
    }

    [Fact]
    public void MismatchListsEveryDifferingField()
    {
        var flavor = Flavors.Get("8B");
        var config = Flavors.Get("70B") with { RopeTheta = 10000.0 };
        var e = Assert.Throws<ArgumentException>(() => HfConfig.EnsureMatches(flavor, config));
        Assert.Contains("hidden_size 4096 (flavor) vs 8192 (config.json)", e.Message);
        Assert.Contains("num_hidden_layers 32 (flavor) vs 80 (config.json)", e.Message);
        Assert.Contains("num_attention_heads 32 (flavor) vs 64 (config.json)", e.Message);
        Assert.Contains("intermediate_size 14336 (flavor) vs 28672 (config.json)", e.Message);
        Assert.Contains("rope_theta 500000 (flavor) vs 10000 (config.json)", e.Message);
        Assert.DoesNotContain("num_key_value_heads", e.Message);
        Assert.DoesNotContain("vocab_size", e.Message);
    }

    [Fact]
    public void FlavorWithoutVocabularyAcceptsAnyVocabulary()
    {
        var debug = Flavors.Get("debug");
        HfConfig.EnsureMatches(debug, debug with { VocabSize = 259 });
        var e = Assert.Throws<ArgumentException>(() => HfConfig.EnsureMatches(debug, debug with { TieEmbeddings = true }));
        Assert.Contains("tie_word_embeddings false (flavor) vs true (config.json)", e.Message);
    }

    [Fact]
    public void UnsupportedOrMissingFieldsAreClearErrors()
    {
        using var dir = new TempFolder();
        string path = dir.File("config.json");
        File.WriteAllText(path, Llama31_8B.Replace("\"rope_type\": \"llama3\"", "\"rope_type\": \"yarn\""));
        Assert.Contains("rope_scaling type 'yarn' is not supported",
            Assert.Throws<CheckpointFormatException>(() => HfConfig.Read(path)).Message);

        File.WriteAllText(path, Llama31_8B.Replace("\"hidden_size\": 4096,", ""));
        Assert.Contains("missing 'hidden_size'", Assert.Throws<CheckpointFormatException>(() => HfConfig.Read(path)).Message);

        File.WriteAllText(path, Llama31_8B.Replace("\"model_type\": \"llama\"", "\"model_type\": \"mistral\""));
        Assert.Contains("model_type is 'mistral'", Assert.Throws<CheckpointFormatException>(() => HfConfig.Read(path)).Message);
    }
}
