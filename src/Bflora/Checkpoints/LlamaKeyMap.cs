using System.Text.RegularExpressions;
using Bflora.Models.Llama3;
using static TorchSharp.torch;

namespace Bflora.Checkpoints;

/// <summary>
/// Names and layouts between Hugging Face Llama checkpoints and the torchtitan-style names the model uses inside.
/// HF stores q_proj/k_proj rows in rotate-half order; torchtitan's interleaved-pair RoPE wants, within each head,
/// row 2j = HF row j and row 2j+1 = HF row j + hd/2. Bitflip positions are taken over the torchtitan layout.
/// </summary>
public static partial class LlamaKeyMap
{
    private static readonly (string Hf, string Titan)[] LayerParts =
    [
        ("self_attn.q_proj", "attention.wq"),
        ("self_attn.k_proj", "attention.wk"),
        ("self_attn.v_proj", "attention.wv"),
        ("self_attn.o_proj", "attention.wo"),
        ("mlp.gate_proj", "feed_forward.w1"),
        ("mlp.up_proj", "feed_forward.w3"),
        ("mlp.down_proj", "feed_forward.w2"),
        ("input_layernorm", "attention_norm"),
        ("post_attention_layernorm", "ffn_norm"),
    ];

    /// <summary>The HF names of a block's Linear layers, "q_proj" … "down_proj", as PEFT's target_modules names them.</summary>
    public static IReadOnlyList<string> LinearModuleNames { get; } =
        LayerParts.Where(p => p.Hf.EndsWith("_proj", StringComparison.Ordinal)).Select(p => p.Hf[(p.Hf.IndexOf('.') + 1)..]).ToArray();

    private static readonly (string Hf, string Titan)[] TopLevel =
    [
        ("model.embed_tokens.weight", "tok_embeddings.weight"),
        ("model.norm.weight", "norm.weight"),
        ("lm_head.weight", "output.weight"),
    ];

    [GeneratedRegex(@"^model\.layers\.(\d+)\.(.+)\.weight$")]
    private static partial Regex HfLayerKey();

    [GeneratedRegex(@"^layers\.(\d+)\.(.+)\.weight$")]
    private static partial Regex TitanLayerKey();

    /// <summary>
    /// The torchtitan name of an HF key, or null for keys the model does not load (<c>rotary_emb.inv_freq</c>,
    /// which the model recomputes). An unknown key throws.
    /// </summary>
    public static string? HfToTitan(string hfKey)
    {
        if (hfKey.EndsWith("rotary_emb.inv_freq", StringComparison.Ordinal)) return null;
        foreach (var (hf, titan) in TopLevel)
            if (hf == hfKey) return titan;
        var m = HfLayerKey().Match(hfKey);
        if (m.Success)
            foreach (var (hf, titan) in LayerParts)
                if (hf == m.Groups[2].Value) return $"layers.{m.Groups[1].Value}.{titan}.weight";
        throw new ArgumentException($"'{hfKey}' is not a Llama checkpoint key this loader knows");
    }

    /// <summary>The HF key of a torchtitan name; an unknown name throws.</summary>
    public static string TitanToHf(string titanKey)
    {
        foreach (var (hf, titan) in TopLevel)
            if (titan == titanKey) return hf;
        var m = TitanLayerKey().Match(titanKey);
        if (m.Success)
            foreach (var (hf, titan) in LayerParts)
                if (titan == m.Groups[2].Value) return $"model.layers.{m.Groups[1].Value}.{hf}.weight";
        throw new ArgumentException($"'{titanKey}' is not a Llama model parameter name this exporter knows");
    }

    /// <summary>Heads whose rows must be permuted for a torchtitan name (wq: n_heads, wk: n_kv_heads), else null.</summary>
    public static int? PermutedHeads(string titanKey, ModelArgs args)
    {
        if (titanKey.EndsWith(".attention.wq.weight", StringComparison.Ordinal)) return args.NHeads;
        if (titanKey.EndsWith(".attention.wk.weight", StringComparison.Ordinal)) return args.NKvHeads;
        return null;
    }

    /// <summary>The HF row that torchtitan row <paramref name="titanRow"/> of a q/k weight comes from.</summary>
    public static long HfRowOf(long titanRow, int headDim)
    {
        long head = titanRow / headDim, within = titanRow % headDim;
        return head * headDim + within / 2 + (within % 2) * (headDim / 2);
    }

    /// <summary>HF q/k rows [H·hd, in] → torchtitan layout: per head view [H, 2, hd/2, in], swap axes 1 and 2.</summary>
    public static Tensor HfToTitanRows(Tensor weight, int nHeads)
    {
        var (rows, cols, headDim) = CheckQk(weight, nHeads);
        using var scope = NewDisposeScope();
        return weight.reshape(nHeads, 2, headDim / 2, cols).transpose(1, 2).reshape(rows, cols).MoveToOuterDisposeScope();
    }

    /// <summary>The inverse of <see cref="HfToTitanRows"/>, for exporting to HF.</summary>
    public static Tensor TitanToHfRows(Tensor weight, int nHeads)
    {
        var (rows, cols, headDim) = CheckQk(weight, nHeads);
        using var scope = NewDisposeScope();
        return weight.reshape(nHeads, headDim / 2, 2, cols).transpose(1, 2).reshape(rows, cols).MoveToOuterDisposeScope();
    }

    private static (long Rows, long Cols, long HeadDim) CheckQk(Tensor weight, int nHeads)
    {
        if (weight.dim() != 2 || nHeads <= 0 || weight.shape[0] % nHeads != 0 || weight.shape[0] / nHeads % 2 != 0)
            throw new ArgumentException(
                $"a q/k weight of shape [{string.Join(", ", weight.shape)}] cannot be split into {nHeads} heads of even size");
        return (weight.shape[0], weight.shape[1], weight.shape[0] / nHeads);
    }
}
