using static TorchSharp.torch;

namespace Bflora.Models.Llama3;

/// <summary>Multi-head causal self-attention with grouped KV heads and rotary positions.</summary>
public sealed class Attention : LinearHost
{
    private static readonly string[] Names = { "wq", "wk", "wv", "wo" };
    private readonly int _nHeads, _nKvHeads, _headDim;
    private nn.Module<Tensor, Tensor> wq, wk, wv, wo;

    public Attention(string prefix, ModelArgs args, LinearFactory linear) : base("Attention")
    {
        _nHeads = args.NHeads;
        _nKvHeads = args.NKvHeads;
        _headDim = args.HeadDim;
        wq = linear($"{prefix}.wq", args.Dim, (long)_nHeads * _headDim);
        wk = linear($"{prefix}.wk", args.Dim, (long)_nKvHeads * _headDim);
        wv = linear($"{prefix}.wv", args.Dim, (long)_nKvHeads * _headDim);
        wo = linear($"{prefix}.wo", (long)_nHeads * _headDim, args.Dim);
        RegisterComponents();
    }

    public override IReadOnlyList<string> LinearNames => Names;

    public override nn.Module<Tensor, Tensor> GetLinear(string localName) => localName switch
    {
        "wq" => wq, "wk" => wk, "wv" => wv, "wo" => wo,
        _ => throw new ArgumentException($"Attention has no Linear '{localName}'"),
    };

    protected override void SetLinearField(string localName, nn.Module<Tensor, Tensor> module)
    {
        switch (localName)
        {
            case "wq": wq = module; break;
            case "wk": wk = module; break;
            case "wv": wv = module; break;
            case "wo": wo = module; break;
        }
    }

    /// <summary>Rotary tables for this call; set by the model before each forward.</summary>
    internal (Tensor Cos, Tensor Sin) RopeTables { get; set; }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        long b = x.size(0), s = x.size(1);
        var q = Rope.Apply(wq.call(x).view(b, s, _nHeads, _headDim), RopeTables.Cos, RopeTables.Sin);
        var k = Rope.Apply(wk.call(x).view(b, s, _nKvHeads, _headDim), RopeTables.Cos, RopeTables.Sin);
        var v = wv.call(x).view(b, s, _nKvHeads, _headDim);
        int repeat = _nHeads / _nKvHeads;
        if (repeat > 1)
        {
            // libtorch SDPA here has no GQA flag: each KV head serves `repeat` consecutive query heads.
            k = k.repeat_interleave(repeat, dim: 2);
            v = v.repeat_interleave(repeat, dim: 2);
        }
        // SDPA's default scale is 1/√head_dim, the Llama scale.
        var attn = nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_casual: true);
        var merged = attn.transpose(1, 2).contiguous().view(b, s, (long)_nHeads * _headDim);
        return wo.call(merged).MoveToOuterDisposeScope();
    }
}
