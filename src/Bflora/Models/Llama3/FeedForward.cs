using static TorchSharp.torch;

namespace Bflora.Models.Llama3;

/// <summary>SwiGLU feed-forward: w2(silu(w1·x) ⊙ w3·x).</summary>
public sealed class FeedForward : LinearHost
{
    private static readonly string[] Names = { "w1", "w2", "w3" };
    private nn.Module<Tensor, Tensor> w1, w2, w3;

    public FeedForward(string prefix, ModelArgs args, LinearFactory linear) : base("FeedForward")
    {
        w1 = linear($"{prefix}.w1", args.Dim, args.FfnHidden);
        w2 = linear($"{prefix}.w2", args.FfnHidden, args.Dim);
        w3 = linear($"{prefix}.w3", args.Dim, args.FfnHidden);
        RegisterComponents();
    }

    public override IReadOnlyList<string> LinearNames => Names;

    public override nn.Module<Tensor, Tensor> GetLinear(string localName) => localName switch
    {
        "w1" => w1, "w2" => w2, "w3" => w3,
        _ => throw new ArgumentException($"FeedForward has no Linear '{localName}'"),
    };

    protected override void SetLinearField(string localName, nn.Module<Tensor, Tensor> module)
    {
        switch (localName)
        {
            case "w1": w1 = module; break;
            case "w2": w2 = module; break;
            case "w3": w3 = module; break;
        }
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return w2.call(nn.functional.silu(w1.call(x)) * w3.call(x)).MoveToOuterDisposeScope();
    }
}
