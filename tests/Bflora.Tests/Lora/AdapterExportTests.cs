using Bflora.Bitflip;
using Bflora.Checkpoints;
using Bflora.Config;
using Bflora.Lora;
using Bflora.Models;
using Xunit;
using static TorchSharp.torch;

namespace Bflora.Tests.Lora;

/// <summary>
/// `export --merged` writes the model one weight at a time; its output must be what merging the whole model in
/// memory gives (the plain twin below), for the seeded random init and for a pretrained base read from sharded
/// safetensors (q/k rows permuted between the layouts).
/// </summary>
public sealed class AdapterExportTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("bflora-export-").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private static BfloraConfig Debug(params string[] overrides) =>
        BfloraConfig.Load(RepoPaths.Of("configs", "debug.toml"), overrides);

    /// <summary>A rank-4 adapter with random A and B (a trained B would start at zero) saved as a PEFT folder.</summary>
    private string SaveAdapter(BfloraConfig config)
    {
        var spec = ModelBuilder.Resolve(config);
        using var model = ModelBuilder.Build(config, spec.Args, spec.Folder);
        var converted = BitFlipConverter.Convert(model, new ConversionOptions(FlipSettings.Off, 4, 8, config.Bitflip.SkipPatterns));
        using (no_grad())
        {
            var generator = new TorchSharp.torch.Generator(7);
            foreach (var (_, layer) in converted.Layers)
            {
                layer.LoraA!.copy_(randn(layer.LoraA.shape, generator: generator).mul_(0.1));
                layer.LoraB!.copy_(randn(layer.LoraB.shape, generator: generator).mul_(0.1));
            }
        }
        string folder = Path.Combine(_root, $"adapter-{Guid.NewGuid():N}");
        PeftAdapter.Save(folder, converted, spec.Args, 8, "debug");
        return folder;
    }

    /// <summary>The plain twin: the whole model built, every adapted weight merged in fp32 and rounded, in torchtitan layout.</summary>
    private static Dictionary<string, Tensor> MergedInMemory(BfloraConfig config, string adapter)
    {
        var spec = ModelBuilder.Resolve(config);
        using var model = ModelBuilder.Build(config, spec.Args, spec.Folder);
        var weights = PeftAdapter.ReadWeights(adapter, spec.Args, ScalarType.Float32);
        var result = new Dictionary<string, Tensor>();
        foreach (var (name, p) in model.named_parameters())
        {
            if (name == "output.weight" && spec.Args.TieEmbeddings) continue;
            result[name] = weights.TryGetValue(name[..^".weight".Length], out var ab)
                ? p.to(ScalarType.Float32).add(ab.B.matmul(ab.A).mul(8.0 / 4)).to(ScalarType.BFloat16)
                : p.detach().clone();
        }
        return result;
    }

    private void AssertExportMatches(BfloraConfig config)
    {
        string adapter = SaveAdapter(config), merged = Path.Combine(_root, $"merged-{Guid.NewGuid():N}");
        AdapterExport.WriteMerged(config, adapter, merged);
        var spec = ModelBuilder.Resolve(config);
        var written = LlamaHfCheckpoint.Open(merged, spec.Args);
        var expected = MergedInMemory(config, adapter);
        Assert.Equal(expected.Keys.Order(), written.Tensors.Keys.Order());
        int adapted = 0;
        foreach (var (name, value) in expected)
        {
            using var read = empty(value.shape, ScalarType.BFloat16);
            written.Read(name, read);
            Assert.True(read.equal(value).all().item<bool>(), $"'{name}' differs from the in-memory merge");
            if (name.Contains(".attention.w") || name.Contains(".feed_forward.w")) adapted++;
        }
        Assert.Equal(7 * spec.Args.NLayers, adapted);
    }

    [Fact]
    public void A_streamed_merge_of_the_random_init_equals_the_in_memory_merge() => AssertExportMatches(Debug());

    [Fact]
    public void A_streamed_merge_of_a_sharded_pretrained_base_equals_the_in_memory_merge()
    {
        var random = Debug();
        var spec = ModelBuilder.Resolve(random);
        string model = Path.Combine(_root, "base");
        using (var built = ModelBuilder.Build(random, spec.Args, null))
            LlamaHfCheckpoint.Export(model, built.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter),
                spec.Args, spec.Tokenizer.BosId, spec.Tokenizer.EosId, maxShardBytes: 64 * 1024);
        Assert.True(File.Exists(Path.Combine(model, HfCheckpoint.IndexFileName)));
        AssertExportMatches(Debug("model.init=pretrained", $"model.hf_model_path={model}"));
    }
}
