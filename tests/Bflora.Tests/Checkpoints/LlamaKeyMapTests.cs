using Bflora.Checkpoints;
using Bflora.Models.Llama3;
using Xunit;
using static TorchSharp.torch;

namespace Bflora.Tests.Checkpoints;

public class LlamaKeyMapTests
{
    public static TheoryData<string, string> Pairs => new()
    {
        { "model.embed_tokens.weight", "tok_embeddings.weight" },
        { "model.layers.0.self_attn.q_proj.weight", "layers.0.attention.wq.weight" },
        { "model.layers.3.self_attn.k_proj.weight", "layers.3.attention.wk.weight" },
        { "model.layers.12.self_attn.v_proj.weight", "layers.12.attention.wv.weight" },
        { "model.layers.79.self_attn.o_proj.weight", "layers.79.attention.wo.weight" },
        { "model.layers.1.mlp.gate_proj.weight", "layers.1.feed_forward.w1.weight" },
        { "model.layers.1.mlp.up_proj.weight", "layers.1.feed_forward.w3.weight" },
        { "model.layers.1.mlp.down_proj.weight", "layers.1.feed_forward.w2.weight" },
        { "model.layers.5.input_layernorm.weight", "layers.5.attention_norm.weight" },
        { "model.layers.5.post_attention_layernorm.weight", "layers.5.ffn_norm.weight" },
        { "model.norm.weight", "norm.weight" },
        { "lm_head.weight", "output.weight" },
    };

    [Theory]
    [MemberData(nameof(Pairs))]
    public void KeysMapBothWays(string hf, string titan)
    {
        Assert.Equal(titan, LlamaKeyMap.HfToTitan(hf));
        Assert.Equal(hf, LlamaKeyMap.TitanToHf(titan));
    }

    [Fact]
    public void RotaryBufferIsDroppedAndUnknownKeysThrow()
    {
        Assert.Null(LlamaKeyMap.HfToTitan("model.layers.0.self_attn.rotary_emb.inv_freq"));
        Assert.Contains("'model.layers.0.mlp.act.weight'",
            Assert.Throws<ArgumentException>(() => LlamaKeyMap.HfToTitan("model.layers.0.mlp.act.weight")).Message);
        Assert.Throws<ArgumentException>(() => LlamaKeyMap.TitanToHf("layers.0.attention.wq.lora_A"));
    }

    [Fact]
    public void QkRowsFollowTheExplicitFormula()
    {
        using var scope = NewDisposeScope();
        // 2 heads of head dim 4, 3 input columns; row r of the HF weight holds 10*r + column.
        var hf = (arange(8).unsqueeze(1) * 10 + arange(3).unsqueeze(0)).to(ScalarType.Float32);

        var titan = LlamaKeyMap.HfToTitanRows(hf, nHeads: 2);

        long[] expectedHfRows = [0, 2, 1, 3, 4, 6, 5, 7];
        for (int r = 0; r < 8; r++)
        {
            Assert.Equal(expectedHfRows[r], LlamaKeyMap.HfRowOf(r, headDim: 4));
            TensorAssert.Identical(titan[r], hf[expectedHfRows[r]], $"row {r}");
        }
    }

    [Fact]
    public void InversePermutationRestoresTheHfLayout()
    {
        using var scope = NewDisposeScope();
        var hf = randn(8 * 16, 5);
        var titan = LlamaKeyMap.HfToTitanRows(hf, nHeads: 8);
        Assert.False(titan.eq(hf).all().item<bool>());
        TensorAssert.Identical(hf, LlamaKeyMap.TitanToHfRows(titan, nHeads: 8));
        TensorAssert.Identical(hf, LlamaKeyMap.HfToTitanRows(LlamaKeyMap.TitanToHfRows(hf, 8), 8));
        for (long r = 0; r < 128; r++)
            TensorAssert.Identical(titan[r], hf[LlamaKeyMap.HfRowOf(r, 16)]);
        Assert.Throws<ArgumentException>(() => LlamaKeyMap.HfToTitanRows(randn(6, 2), nHeads: 2));
    }

    [Fact]
    public void OnlyQueryAndKeyWeightsArePermuted()
    {
        var args = Flavors.Get("8B");
        Assert.Equal(32, LlamaKeyMap.PermutedHeads("layers.4.attention.wq.weight", args));
        Assert.Equal(8, LlamaKeyMap.PermutedHeads("layers.4.attention.wk.weight", args));
        Assert.Null(LlamaKeyMap.PermutedHeads("layers.4.attention.wv.weight", args));
        Assert.Null(LlamaKeyMap.PermutedHeads("output.weight", args));
    }
}
