using static TorchSharp.torch;

namespace Bflora.Eval;

/// <summary>
/// A <see cref="MagnitudeHistogram"/>'s counts kept on the device of the tensors counted, from tensor ops alone: on a
/// GPU, counting a Linear's input this way neither copies it to the host nor waits for it, and the 32768 counts are
/// read once, by <see cref="MoveInto"/>. The bins are the CPU count's, bit for bit: |v| in bf16 is looked up among the
/// finite bf16 magnitudes in ascending order, which is the order of their bit patterns, so a value's position there is
/// its pattern with the sign cleared; NaN goes to bin 0 and ±Inf to <see cref="MagnitudeHistogram.InfBin"/>.
/// </summary>
public sealed class DeviceBinCounts : IDisposable
{
    /// <summary>Bins 0 … 0x7F7F: zero up to the largest finite bf16.</summary>
    const int FiniteBins = 0x7F80;

    /// <summary>The value of every finite bin, ascending; the same for every instance.</summary>
    static readonly float[] FiniteMagnitudes =
        Enumerable.Range(0, FiniteBins).Select(bin => MagnitudeHistogram.ValueOf((ushort)bin)).ToArray();

    readonly Tensor _magnitudes;
    readonly Tensor _counts;
    readonly Tensor _one;

    /// <summary>Whether anything was counted since the last move: a move without it reads nothing from the device.</summary>
    bool _pending;

    public DeviceBinCounts(Device device)
    {
        // They live as long as this object, not as long as a dispose scope its first Add may run in.
        using (NewDisposeScope())
        {
            _magnitudes = tensor(FiniteMagnitudes, ScalarType.Float32).to(device).DetachFromDisposeScope();
            _counts = zeros(MagnitudeHistogram.Bins, ScalarType.Int64, device: device).DetachFromDisposeScope();
            _one = ones(1, ScalarType.Int64, device: device).DetachFromDisposeScope();
        }
    }

    /// <summary>Queues the count of every element of t (rounded to bf16 first, as on the CPU), on t's device.</summary>
    public void Add(Tensor t)
    {
        using var scope = NewDisposeScope();
        var magnitude = MagnitudeHistogram.AsBf16(t).abs().to(ScalarType.Float32).flatten();
        long n = magnitude.numel();
        if (n == 0) return;
        // right: false finds the first finite magnitude ≥ |v|: |v| itself. Inf lands past the end and NaN anywhere.
        var bins = magnitude.bucketize(_magnitudes, outInt32: false, right: false)
            .masked_fill_(magnitude.isinf(), MagnitudeHistogram.InfBin)
            .masked_fill_(magnitude.isnan(), 0);
        // Atomic adds on the device; bincount would make the host wait, for the largest bin to size its output.
        _counts.scatter_add_(0, bins, _one.expand(n));
        _pending = true;
    }

    /// <summary>Adds the counts so far to <paramref name="histogram"/> and starts again from zero.</summary>
    /// <returns>The largest bin counted since the last move (0 if none).</returns>
    public ushort MoveInto(MagnitudeHistogram histogram)
    {
        if (!_pending) return 0;
        _pending = false;
        long[] counts;
        // On the CPU, cpu() may hand back the counts themselves, which the scope then leaves alone.
        using (NewDisposeScope()) counts = _counts.cpu().data<long>().ToArray();
        _counts.zero_();
        return histogram.Add(counts);
    }

    public void Dispose()
    {
        _magnitudes.Dispose();
        _counts.Dispose();
        _one.Dispose();
    }
}
