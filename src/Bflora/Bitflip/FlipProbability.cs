namespace Bflora.Bitflip;

/// <summary>
/// Converts a per-bit probability into "halves" n, the flip happening with probability 0.5^n.
/// </summary>
public static class FlipProbability
{
    /// <summary>
    /// n = ceil(log2(1/p)), i.e. the smallest n with 0.5^n ≤ p, so p is snapped down to a power of ½.
    /// p = 0 means the component is off (null). p outside [0, 1] or NaN is an error.
    /// </summary>
    public static int? Halves(double p)
    {
        if (double.IsNaN(p) || p < 0 || p > 1)
            throw new ArgumentException($"bitflip probability must lie in [0, 1], got {p}");
        if (p == 0) return null;
        // A loop over exact powers of ½ avoids any rounding doubt in log2 at exact powers.
        int n = 0;
        while (Math.ScaleB(1.0, -n) > p) n++;
        return n;
    }

    /// <summary>The probability actually used for p (0 when off), so a caller can warn when it differs from p.</summary>
    public static double Snapped(double p) => Halves(p) is int n ? Math.ScaleB(1.0, -n) : 0.0;

    public static bool IsExact(double p) => Snapped(p) == p;
}
