using System.Text;
using static TorchSharp.torch;

namespace Bflora.Models.Llama3;

/// <summary>
/// Materialises a meta-built <see cref="Transformer"/>, one parameter at a time, so peak memory is the model plus one
/// tensor. Random values follow torchtitan's Llama init (depth-scaled output projections) and are seeded per
/// parameter name, so they do not depend on the order or the process that generates them.
/// </summary>
public static class ModelInit
{
    /// <summary>Fills every parameter from <paramref name="provide"/> (name, shape) → tensor in the model dtype.</summary>
    public static void Materialize(Transformer model, Func<string, long[], Tensor> provide)
    {
        foreach (var (name, parameter) in model.named_parameters().ToList())
        {
            if (!parameter.is_meta) continue;
            var value = provide(name, parameter.shape);
            model.SetParameter(name, value, requiresGrad: false);
        }
    }

    public static void Random(Transformer model, long seed, ScalarType dtype = ScalarType.BFloat16) =>
        Materialize(model, (name, shape) => RandomParameter(model.Args, name, shape, seed, dtype));

    /// <summary>The random value of one parameter; identical for the same (seed, name, shape) everywhere.</summary>
    public static Tensor RandomParameter(ModelArgs args, string name, long[] shape, long seed, ScalarType dtype)
    {
        if (name.EndsWith("norm.weight", StringComparison.Ordinal)) return ones(shape, dtype: dtype);
        using var scope = NewDisposeScope();
        using var generator = new Generator(unchecked((ulong)(seed * 1_000_003L) ^ StableHash(name)));
        var values = empty(shape, dtype: ScalarType.Float32);
        double std = StdFor(args, name);
        if (name == "tok_embeddings.weight")
            values.normal_(0.0, std, generator);
        else
            TruncatedNormal(values, std, generator);
        return values.to(dtype).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// N(0, std²) truncated to ±3·std by inverse-CDF sampling, u ~ U(Φ(-3), Φ(3)), x = std·√2·erfinv(2u - 1):
    /// TorchSharp 0.107's nn.init functions ignore the generator (trunc_normal_ even returned zeros), while the
    /// tensor methods uniform_/normal_ honour it.
    /// </summary>
    private static void TruncatedNormal(Tensor values, double std, Generator generator)
    {
        const double phiOfMinus3 = 0.0013498980316301035;
        values.uniform_(2 * phiOfMinus3 - 1, 1 - 2 * phiOfMinus3, generator);
        values.erfinv_().mul_(std * Math.Sqrt(2)).clamp_(-3 * std, 3 * std);
    }

    private static double StdFor(ModelArgs args, string name)
    {
        if (name == "tok_embeddings.weight") return 1.0;
        if (name == "output.weight") return 1.0 / Math.Sqrt(args.Dim);
        // Projections that write into the residual stream shrink with depth, as in torchtitan.
        if (name.Contains(".attention.wo.") || name.Contains(".feed_forward.w2.") || name.Contains(".feed_forward.w3."))
        {
            int layer = int.Parse(name.Split('.')[1]);
            return 0.02 / Math.Sqrt(2.0 * (layer + 1));
        }
        return 0.02;
    }

    /// <summary>FNV-1a over UTF-8: stable across runs and platforms, unlike string.GetHashCode.</summary>
    private static ulong StableHash(string text)
    {
        ulong hash = 14695981039346656037UL;
        foreach (byte b in Encoding.UTF8.GetBytes(text)) hash = (hash ^ b) * 1099511628211UL;
        return hash;
    }
}
