using static TorchSharp.torch;

namespace Bflora.Models.Llama3;

/// <summary>Pre-norm decoder block: h = x + attn(norm(x)); out = h + ffn(norm(h)).</summary>
public sealed class TransformerBlock : nn.Module<Tensor, Tensor>
{
    private readonly Attention attention;
    private readonly FeedForward feed_forward;
    private readonly RmsNorm attention_norm;
    private readonly RmsNorm ffn_norm;

    public TransformerBlock(int layerId, ModelArgs args, LinearFactory linear, Device device, ScalarType dtype)
        : base("TransformerBlock")
    {
        attention = new Attention($"layers.{layerId}.attention", args, linear);
        feed_forward = new FeedForward($"layers.{layerId}.feed_forward", args, linear);
        attention_norm = new RmsNorm(args.Dim, args.NormEps, device, dtype);
        ffn_norm = new RmsNorm(args.Dim, args.NormEps, device, dtype);
        RegisterComponents();
    }

    public Attention Attention => attention;
    public FeedForward FeedForward => feed_forward;

    internal void SetRope(Tensor cos, Tensor sin) => attention.RopeTables = (cos, sin);

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = x + attention.call(attention_norm.call(x));
        return (h + feed_forward.call(ffn_norm.call(h))).MoveToOuterDisposeScope();
    }
}
