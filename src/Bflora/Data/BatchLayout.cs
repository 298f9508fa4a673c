namespace Bflora.Data;

/// <summary>
/// Which windows each rank trains on (DESIGN "Distributed"). The global batch of optimizer step k (0-based) is the
/// <see cref="GlobalBatch"/> = local_batch · accumulation · world consecutive windows from k · GlobalBatch on;
/// micro-batch m of rank r is its (m · world + r)-th slice of local_batch windows. So world 1 with accumulation 2
/// and world 2 with accumulation 1 train on the same windows in the same micro-batches.
/// </summary>
public sealed record BatchLayout(int LocalBatch, int Accumulation, int World)
{
    public int GlobalBatch => checked(LocalBatch * Accumulation * World);

    /// <summary>Offset of micro-batch <paramref name="micro"/> of <paramref name="rank"/> inside a global batch.</summary>
    public int SliceStart(int micro, int rank)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(micro);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(micro, Accumulation);
        ArgumentOutOfRangeException.ThrowIfNegative(rank);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(rank, World);
        return (micro * World + rank) * LocalBatch;
    }

    /// <summary>Index, in the window stream, of the first window of that micro-batch at 0-based step <paramref name="step"/>.</summary>
    public long FirstWindow(long step, int micro, int rank) => step * GlobalBatch + SliceStart(micro, rank);
}
