namespace Bflora.Bitflip;

/// <summary>Which generator draws the random masks.</summary>
public enum FlipRng
{
    /// <summary>Same law as Philox, but only the flipped bits are drawn (geometric gaps per block).</summary>
    Fast,
    /// <summary>The original kernel's masks bit for bit.</summary>
    Philox,
}

/// <summary>
/// One flip call: halves per component (null = off), their seeds, and the zero-out threshold (null = none).
/// </summary>
public readonly record struct FlipOp(int? ExpHalves, int? FracHalves, int SeedExp, int SeedFrac, double? ZeroOutT,
    FlipRng Rng = FlipRng.Fast)
{
    public bool IsIdentity => ExpHalves is null && FracHalves is null && ZeroOutT is null;

    /// <summary>The threshold as the fp32 value the comparison uses.</summary>
    public float? ZeroOutThreshold => ZeroOutT is double t ? (float)t : null;

    public FlipOp WithoutZeroOut() => this with { ZeroOutT = null };
}
