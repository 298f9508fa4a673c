namespace Bflora.Training;

/// <summary>
/// The original's LambdaLR schedule (SEMANTICS.md §5): linear warmup, then cosine to 0 without a floor, with its
/// off-by-one kept: optimizer step k (1-based) uses lr·f(k−1), so step 1 runs at lr 0 (the Adam moments still update).
/// </summary>
public sealed record LrSchedule(double BaseLr, int WarmupSteps, int TotalSteps)
{
    /// <summary>f(t) after t scheduler steps.</summary>
    public double Factor(long t)
    {
        if (t < WarmupSteps) return (double)t / WarmupSteps;
        double progress = (double)(t - WarmupSteps) / Math.Max(1, TotalSteps - WarmupSteps);
        return 0.5 * (1 + Math.Cos(Math.PI * progress));
    }

    /// <summary>The rate used by optimizer step <paramref name="step"/> (1-based); also the logged one.</summary>
    public double LrAt(long step)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(step, 1);
        return BaseLr * Factor(step - 1);
    }
}
