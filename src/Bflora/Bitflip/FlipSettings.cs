namespace Bflora.Bitflip;

/// <summary>
/// A layer's flip configuration: per-bit probabilities for weights (W) and inputs (X), 0 = off; thresholds, null = no
/// zero-out. Probabilities are snapped down to powers of ½ (see <see cref="FlipProbability"/>).
/// </summary>
public sealed record FlipSettings(double WPExp, double WPFrac, double? WZeroOutT, double XPExp, double XPFrac,
    double? XZeroOutT, long BaseSeed, FlipRng Rng = FlipRng.Fast)
{
    public static FlipSettings Off { get; } = new(0, 0, null, 0, 0, null, 0);

    /// <summary>The input flip of layer layerIdx at optimizer step step.</summary>
    public FlipOp XOp(long step, int layerIdx)
    {
        var s = FlipSeeds.For(BaseSeed, step, layerIdx);
        return new FlipOp(FlipProbability.Halves(XPExp), FlipProbability.Halves(XPFrac), s.XExp, s.XFrac, XZeroOutT, Rng);
    }

    /// <summary>The (merged) weight flip of layer layerIdx at optimizer step step.</summary>
    public FlipOp WOp(long step, int layerIdx)
    {
        var s = FlipSeeds.For(BaseSeed, step, layerIdx);
        return new FlipOp(FlipProbability.Halves(WPExp), FlipProbability.Halves(WPFrac), s.WExp, s.WFrac, WZeroOutT, Rng);
    }
}

/// <summary>The four component seeds of one layer at one step.</summary>
public readonly record struct LayerSeeds(int XExp, int XFrac, int WExp, int WFrac);

public static class FlipSeeds
{
    public const long StepStride = 1000003;

    /// <summary>
    /// The original's scheme: base = (base_seed + step·1000003 + 4·layer) &amp; 0x7FFFFFFC, then x_exp, x_frac,
    /// w_exp, w_frac = base..base+3. Computed in 64 bits; the mask keeps it a non-negative int.
    /// </summary>
    public static LayerSeeds For(long baseSeed, long step, int layerIdx)
    {
        int b = (int)(unchecked(baseSeed + step * StepStride + 4L * layerIdx) & 0x7FFFFFFCL);
        return new LayerSeeds(b, b + 1, b + 2, b + 3);
    }
}

/// <summary>The optimizer-step counter all flip layers share; the trainer adds 1 after each optimizer step.</summary>
public sealed class FlipStep
{
    public long Value;
}
