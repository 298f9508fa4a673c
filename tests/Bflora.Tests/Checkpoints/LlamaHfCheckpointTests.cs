using Bflora.Checkpoints;
using Bflora.Models.Llama3;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Bflora.Tests.Checkpoints;

public class LlamaHfCheckpointTests
{
    private static readonly ModelArgs Args = Flavors.Get("debug") with { VocabSize = 32 };

    private static Dictionary<string, Tensor> TitanTensors()
    {
        int dim = Args.Dim, kv = Args.NKvHeads * Args.HeadDim, ffn = Args.FfnHidden;
        var tensors = new Dictionary<string, Tensor>
        {
            ["tok_embeddings.weight"] = randn(Args.VocabSize, dim),
            ["norm.weight"] = randn(dim),
            ["output.weight"] = randn(Args.VocabSize, dim),
        };
        for (int i = 0; i < Args.NLayers; i++)
        {
            tensors[$"layers.{i}.attention.wq.weight"] = randn(dim, dim);
            tensors[$"layers.{i}.attention.wk.weight"] = randn(kv, dim);
            tensors[$"layers.{i}.attention.wv.weight"] = randn(kv, dim);
            tensors[$"layers.{i}.attention.wo.weight"] = randn(dim, dim);
            tensors[$"layers.{i}.feed_forward.w1.weight"] = randn(ffn, dim);
            tensors[$"layers.{i}.feed_forward.w2.weight"] = randn(dim, ffn);
            tensors[$"layers.{i}.feed_forward.w3.weight"] = randn(ffn, dim);
            tensors[$"layers.{i}.attention_norm.weight"] = randn(dim);
            tensors[$"layers.{i}.ffn_norm.weight"] = randn(dim);
        }
        return tensors.ToDictionary(kv => kv.Key, kv => kv.Value.bfloat16());
    }

    [Fact]
    public void ExportThenOpenGivesBackTheTorchtitanTensors()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempFolder();
        var titan = TitanTensors();

        LlamaHfCheckpoint.Export(dir.Path, titan, Args, bosTokenId: 1, eosTokenId: 2, maxShardBytes: 64 * 1024);

        Assert.Equal(Args, HfConfig.Read(dir.Path));
        var checkpoint = LlamaHfCheckpoint.Open(dir.Path, Args);
        Assert.Equal(titan.Keys.Order(), checkpoint.Tensors.Keys.Order());
        TensorAssert.Identical(LlamaKeyMap.TitanToHfRows(titan["layers.0.attention.wq.weight"], Args.NHeads),
            checkpoint.Source.Load("model.layers.0.self_attn.q_proj.weight"));
        foreach (var (name, expected) in titan)
        {
            var target = empty(expected.shape, ScalarType.BFloat16);
            checkpoint.Read(name, target);
            TensorAssert.Identical(expected, target, name);
        }
    }

    [Theory]
    [InlineData("layers.1.attention.wq.weight", 0, 64)]
    [InlineData("layers.1.attention.wq.weight", 37, 300)]
    [InlineData("layers.0.attention.wk.weight", 1000, 1048)]
    [InlineData("layers.0.feed_forward.w2.weight", 5, 777)]
    public void FlatSlicesAddressTheTorchtitanLayout(string name, long start, long count)
    {
        using var scope = NewDisposeScope();
        using var dir = new TempFolder();
        var titan = TitanTensors();
        LlamaHfCheckpoint.Export(dir.Path, titan, Args, bosTokenId: 1, eosTokenId: 2);
        var checkpoint = LlamaHfCheckpoint.Open(dir.Path, Args);
        var expected = titan[name].flatten().narrow(0, start, count);

        var slice = empty(count, dtype: ScalarType.BFloat16);
        checkpoint.ReadFlatSlice(name, start, count, slice);
        TensorAssert.Identical(expected, slice);

        var widened = empty(count, dtype: ScalarType.Float32);
        checkpoint.ReadFlatSlice(name, start, count, widened);
        TensorAssert.Identical(expected.@float(), widened);
    }

    [Fact]
    public void MissingTensorNamesBothConventions()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempFolder();
        var titan = TitanTensors();
        titan.Remove("output.weight");
        LlamaHfCheckpoint.Export(dir.Path, titan, Args, bosTokenId: 1, eosTokenId: 2);
        var checkpoint = LlamaHfCheckpoint.Open(dir.Path, Args);

        var e = Assert.Throws<CheckpointFormatException>(() => checkpoint.Read("output.weight", empty(Args.VocabSize, Args.Dim)));
        Assert.Contains("no tensor for 'output.weight' (HF name 'lm_head.weight')", e.Message);
    }

    [Fact]
    public void ReadsLeaveNoLiveTensorsAndFillParametersThatRequireGrad()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempFolder();
        var titan = TitanTensors();
        LlamaHfCheckpoint.Export(dir.Path, titan, Args, bosTokenId: 1, eosTokenId: 2);
        var checkpoint = LlamaHfCheckpoint.Open(dir.Path, Args);
        var parameter = empty(Args.Dim, Args.Dim, dtype: ScalarType.Float32).requires_grad_();
        var slice = zeros(10, 20).t();

        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        checkpoint.Read("layers.0.attention.wq.weight", parameter);
        checkpoint.ReadFlatSlice("layers.0.attention.wk.weight", 70, 200, slice);
        checkpoint.Read("layers.0.attention.wo.weight", parameter);
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);

        TensorAssert.Identical(titan["layers.0.attention.wo.weight"].@float(), parameter.detach());
        TensorAssert.Identical(titan["layers.0.attention.wk.weight"].flatten().narrow(0, 70, 200).@float().view(20, 10), slice);
    }
}
