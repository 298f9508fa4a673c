using static TorchSharp.torch;

namespace Bflora.Training;

/// <summary>torch's clip_grad_norm_: one L2 norm over all gradients together, coef = min(1, max_norm / (norm + 1e-6)).</summary>
public static class GradientClipping
{
    /// <summary>The global L2 norm, with squares summed in fp32 whatever the gradients' dtype.</summary>
    public static double GlobalNorm(IEnumerable<Tensor> grads)
    {
        using var scope = NewDisposeScope();
        Tensor? sum = null;
        foreach (var g in grads)
        {
            var squares = g.to(ScalarType.Float32).square().sum();
            sum = sum is null ? squares : sum.add_(squares);
        }
        return sum is null ? 0.0 : Math.Sqrt(sum.item<float>());
    }

    /// <summary>Scales <paramref name="grads"/> in place so their global norm is at most <paramref name="maxNorm"/>; returns the norm before.</summary>
    public static double ClipInPlace(IReadOnlyList<Tensor> grads, double maxNorm)
    {
        double norm = GlobalNorm(grads);
        double coef = Coefficient(norm, maxNorm);
        if (coef < 1)
        {
            using var noGrad = no_grad();
            foreach (var g in grads) g.mul_(coef);
        }
        return norm;
    }

    public static double Coefficient(double norm, double maxNorm) => Math.Min(1.0, maxNorm / (norm + 1e-6));
}
