using static TorchSharp.torch;

namespace Bflora.Training;

/// <summary>
/// What the training loop needs from the other ranks: gradients summed over ranks (each rank's loss is already divided
/// by accumulation · world, so the sum is the mean over the global batch) and a scalar averaged over ranks for the log.
/// An MPI implementation plugs in here; the loop does not change.
/// </summary>
public interface IGradientSync
{
    int WorldSize { get; }
    int Rank { get; }

    /// <summary>Sums each gradient over all ranks, in place.</summary>
    void AllReduceGradients(IReadOnlyList<Tensor> grads);

    double MeanOverRanks(double value);

    /// <summary>The largest of the ranks' values (small integers, e.g. a signal number, come back exact).</summary>
    int MaxOverRanks(int value);
}

/// <summary>One process: nothing to exchange.</summary>
public sealed class SingleProcessSync : IGradientSync
{
    public static readonly SingleProcessSync Instance = new();

    public int WorldSize => 1;
    public int Rank => 0;

    public void AllReduceGradients(IReadOnlyList<Tensor> grads) { }

    public double MeanOverRanks(double value) => value;

    public int MaxOverRanks(int value) => value;
}
