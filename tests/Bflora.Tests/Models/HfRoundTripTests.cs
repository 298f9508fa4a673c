using Bflora.Checkpoints;
using Bflora.Config;
using Bflora.Models;
using Bflora.Models.Llama3;
using Xunit;
using static TorchSharp.torch;

namespace Bflora.Tests.Models;

public class HfRoundTripTests : IDisposable
{
    private readonly string _folder = Directory.CreateTempSubdirectory("bflora-hf-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    private static BfloraConfig PretrainedConfig(string folder, string? flavor = null) => BfloraConfig.FromText(
        (flavor is null ? "" : $"[model]\nflavor = \"{flavor}\"\n").Replace("[model]\n", "") is var f
            ? $"[model]\n{f}hf_model_path = \"{folder}\"\ninit = \"pretrained\"\n[training]\nseq_len = 16\n"
            : "");

    private static Dictionary<string, Tensor> StateOf(Transformer model) =>
        model.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter.detach());

    [Fact]
    public void A_random_model_saved_in_hf_layout_loads_back_to_identical_logits()
    {
        using var scope = NewDisposeScope();
        var args = ModelTestKit.Tiny;
        using var original = ModelTestKit.Random(args, seed: 5, dtype: ScalarType.BFloat16);
        LlamaHfCheckpoint.Export(_folder, StateOf(original), args, bosTokenId: 1, eosTokenId: 2, maxShardBytes: 20_000);
        Assert.True(File.Exists(Path.Combine(_folder, "model.safetensors.index.json")), "expected a sharded checkpoint");

        var config = PretrainedConfig(_folder);
        var loadedArgs = ModelBuilder.ResolveArgs(config, tokenizerVocab: args.VocabSize, modelFolder: _folder);
        using var loaded = ModelBuilder.Build(config, loadedArgs, _folder);

        var tokens = ModelTestKit.Tokens(2, 16, args.VocabSize);
        var expected = ModelTestKit.Logits(original, tokens);
        var actual = ModelTestKit.Logits(loaded, tokens);
        Assert.Equal(0f, (expected.@float() - actual.@float()).abs().max().item<float>());
    }

    [Fact]
    public void Hf_files_hold_permuted_q_k_rows_and_load_to_the_torchtitan_original()
    {
        using var scope = NewDisposeScope();
        var args = ModelTestKit.Tiny;
        using var original = ModelTestKit.Random(args, seed: 9, dtype: ScalarType.BFloat16);
        LlamaHfCheckpoint.Export(_folder, StateOf(original), args, bosTokenId: 1, eosTokenId: 2);

        // In the HF file, row j of head h holds the original's row 2j (first half) or 2(j - hd/2) + 1 (second half).
        var hf = HfCheckpoint.Open(_folder);
        var hfWq = hf.Load("model.layers.0.self_attn.q_proj.weight");
        var titanWq = original.get_parameter("layers.0.attention.wq.weight")!;
        int hd = args.HeadDim;
        for (int h = 0; h < args.NHeads; h++)
        for (int j = 0; j < hd; j++)
        {
            long titanRow = h * hd + (j < hd / 2 ? 2 * j : 2 * (j - hd / 2) + 1);
            Assert.True(hfWq[h * hd + j].equal(titanWq[titanRow]).all().item<bool>(), $"head {h} row {j}");
        }
        Assert.False(hfWq.equal(titanWq).all().item<bool>(), "HF layout must differ from torchtitan layout");

        var config = PretrainedConfig(_folder, flavor: null);
        using var loaded = ModelBuilder.Build(config, ModelBuilder.ResolveArgs(config, args.VocabSize, _folder), _folder);
        var tokens = ModelTestKit.Tokens(1, 12, args.VocabSize);
        Assert.Equal(0f, (ModelTestKit.Logits(original, tokens).@float() - ModelTestKit.Logits(loaded, tokens).@float())
            .abs().max().item<float>());
    }

    [Fact]
    public void A_config_json_that_disagrees_with_the_flavor_is_refused()
    {
        using var scope = NewDisposeScope();
        var args = Flavors.Get("debug") with { VocabSize = 258 };
        HfConfig.Write(Path.Combine(_folder, "config.json"), args with { NLayers = 3 }, 256, 257);
        var config = PretrainedConfig(_folder, flavor: "debug");
        var e = Assert.Throws<BfloraInputException>(() => ModelBuilder.ResolveArgs(config, 258, _folder));
        Assert.Contains("debug", e.Message);
    }
}
