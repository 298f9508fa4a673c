using Bflora.Checkpoints;
using Xunit;
using static TorchSharp.torch;

namespace Bflora.Tests.Checkpoints;

public class HfCheckpointTests
{
    private static Dictionary<string, Tensor> SampleTensors() => new()
    {
        ["model.embed_tokens.weight"] = randn(10, 4).bfloat16(),
        ["model.layers.0.self_attn.q_proj.weight"] = randn(4, 4).bfloat16(),
        ["model.layers.0.mlp.down_proj.weight"] = randn(4, 6).bfloat16(),
        ["model.norm.weight"] = ones(4),
    };

    [Fact]
    public void ShardedCheckpointRoundTripsThroughItsIndex()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempFolder();
        HfCheckpointWriter.Write(dir.Path, SampleTensors());
        var tensors = SampleTensors();

        HfCheckpointWriter.Write(dir.Path, tensors, maxShardBytes: 50);

        Assert.True(File.Exists(dir.File(HfCheckpoint.IndexFileName)));
        Assert.False(File.Exists(dir.File(HfCheckpoint.SingleFileName)));
        var shards = Directory.GetFiles(dir.Path, "model-*-of-*.safetensors");
        Assert.True(shards.Length >= 3, $"expected several shards, got {shards.Length}");

        var checkpoint = HfCheckpoint.Open(dir.Path);
        Assert.Equal(tensors.Keys.Order(), checkpoint.Tensors.Keys.Order());
        Assert.Equal(shards.Length, checkpoint.Tensors.Values.Select(t => t.File).Distinct().Count());
        foreach (var (name, expected) in tensors)
        {
            Assert.Equal(expected.shape, checkpoint.Info(name).Shape);
            TensorAssert.Identical(expected, checkpoint.Load(name), name);
        }

        var slice = empty(5, dtype: ScalarType.BFloat16);
        checkpoint.ReadFlatSlice("model.embed_tokens.weight", 13, 5, slice);
        TensorAssert.Identical(tensors["model.embed_tokens.weight"].flatten()[TensorIndex.Slice(13, 18)], slice);
    }

    [Fact]
    public void SmallCheckpointIsOneFileAndReplacesAStaleIndex()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempFolder();
        HfCheckpointWriter.Write(dir.Path, SampleTensors(), maxShardBytes: 50);
        var tensors = SampleTensors();

        HfCheckpointWriter.Write(dir.Path, tensors, maxShardBytes: 1L << 30);

        Assert.False(File.Exists(dir.File(HfCheckpoint.IndexFileName)));
        var checkpoint = HfCheckpoint.Open(dir.Path);
        Assert.All(checkpoint.Tensors.Values, t => Assert.Equal(dir.File(HfCheckpoint.SingleFileName), t.File));
        var target = empty(4, 6, dtype: ScalarType.Float32);
        checkpoint.Read("model.layers.0.mlp.down_proj.weight", target);
        TensorAssert.Identical(tensors["model.layers.0.mlp.down_proj.weight"].@float(), target);
    }

    [Fact]
    public void MissingTensorShardOrFilesAreClearErrors()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempFolder();
        HfCheckpointWriter.Write(dir.Path, SampleTensors());
        var checkpoint = HfCheckpoint.Open(dir.Path);
        var e = Assert.Throws<CheckpointFormatException>(() => checkpoint.Load("lm_head.weight"));
        Assert.Contains("no tensor named 'lm_head.weight'", e.Message);

        File.WriteAllText(dir.File(HfCheckpoint.IndexFileName),
            """{"weight_map":{"model.norm.weight":"model-00002-of-00002.safetensors"}}""");
        e = Assert.Throws<CheckpointFormatException>(() => HfCheckpoint.Open(dir.Path));
        Assert.Contains("shard 'model-00002-of-00002.safetensors' (holding 'model.norm.weight') does not exist", e.Message);

        File.WriteAllText(dir.File(HfCheckpoint.IndexFileName), """{"weight_map":{"model.norm.weight":"../x.safetensors"}}""");
        e = Assert.Throws<CheckpointFormatException>(() => HfCheckpoint.Open(dir.Path));
        Assert.Contains("not a shard file name", e.Message);

        using var empty = new TempFolder();
        e = Assert.Throws<CheckpointFormatException>(() => HfCheckpoint.Open(empty.Path));
        Assert.Contains("neither model.safetensors nor model.safetensors.index.json", e.Message);
    }
}
