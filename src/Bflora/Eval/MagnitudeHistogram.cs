using Bflora.Bitflip;
using static TorchSharp.torch;

namespace Bflora.Eval;

/// <summary>
/// A streaming histogram of |v| that is exact for bf16 values: one bin per bf16 bit pattern with the sign cleared
/// (32768 bins), so percentiles and the maximum are the values themselves, not the edges of power-of-two bins as in
/// the original. Histograms add up (<see cref="Add(MagnitudeHistogram)"/>), so per-thread or per-rank parts merge exactly.
/// </summary>
public sealed class MagnitudeHistogram
{
    public const int Bins = 1 << 15;

    /// <summary>The bin of +Inf: bf16 2^40 (biased exponent 127 + 40, zero mantissa).</summary>
    public const ushort InfBin = (127 + 40) << 7;

    // Below this many elements a tensor is counted on the calling thread: the per-thread histograms cost more than they save.
    private const long ParallelThreshold = 1 << 20;
    private const long ChunkElements = 1 << 18;

    private readonly long[] _counts = new long[Bins];

    /// <summary>Values counted.</summary>
    public long Count { get; private set; }

    /// <summary>The count of every bin, in bin order (for merging histograms across ranks).</summary>
    internal ReadOnlySpan<long> Counts => _counts;

    /// <summary>Values counted in the bin of this bf16 magnitude pattern.</summary>
    public long CountOf(ushort bin) => _counts[bin];

    /// <summary>
    /// The bin of one bf16 word. As in the original, NaN counts as 0 and ±Inf as 2^40, so neither is lost from the count
    /// and neither hides the finite maximum behind a value no threshold could hold.
    /// </summary>
    public static ushort BinOf(ushort bits)
    {
        int a = bits & 0x7FFF;
        if (a < 0x7F80) return (ushort)a;
        return a == 0x7F80 ? InfBin : (ushort)0;
    }

    /// <summary>The value of a bin as a float (exact: every bf16 value is a float).</summary>
    public static float ValueOf(ushort bin) => BitConverter.Int32BitsToSingle(bin << 16);

    /// <summary>
    /// Counts every element of <paramref name="t"/>; a dtype other than bf16 is rounded to bf16 first. A tensor on an
    /// accelerator is counted there (<see cref="DeviceBinCounts"/>) and only its 32768 counts are read back.
    /// </summary>
    /// <returns>The largest bin seen in this tensor (0 for an empty one), for per-layer maxima.</returns>
    public unsafe ushort AddTensor(Tensor t)
    {
        if (t.device_type != TorchSharp.DeviceType.CPU)
        {
            using var counts = new DeviceBinCounts(t.device);
            counts.Add(t);
            return counts.MoveInto(this);
        }
        using var scope = NewDisposeScope();
        var words = AsBf16(t).contiguous();
        long n = words.numel();
        if (n == 0) return 0;
        ushort* p = (ushort*)TensorBits.Pointer(words);
        if (n < ParallelThreshold) return AddWords(p, n);

        long chunks = (n + ChunkElements - 1) / ChunkElements;
        int max = 0;
        var gate = new object();
        Parallel.For(0L, chunks, () => new Part(),
            (chunk, _, part) =>
            {
                long start = chunk * ChunkElements;
                part.Max = Math.Max(part.Max, part.Counts.AddWords(p + start, Math.Min(ChunkElements, n - start)));
                return part;
            },
            part =>
            {
                lock (gate)
                {
                    Add(part.Counts);
                    max = Math.Max(max, part.Max);
                }
            });
        return (ushort)max;
    }

    /// <summary>Adds another histogram's counts (another thread's, layer's or rank's).</summary>
    public void Add(MagnitudeHistogram other) => Add(other._counts);

    /// <summary>Adds counts per bin (<see cref="Bins"/> of them); returns the largest bin with a count (0 if none).</summary>
    public ushort Add(ReadOnlySpan<long> counts)
    {
        if (counts.Length != Bins) throw new ArgumentException($"a histogram has {Bins} bins, not {counts.Length}");
        int max = 0;
        for (int i = 0; i < Bins; i++)
        {
            if (counts[i] == 0) continue;
            _counts[i] += counts[i];
            Count += counts[i];
            max = i;
        }
        return (ushort)max;
    }

    /// <summary>t as bf16, the format the bins are made of.</summary>
    internal static Tensor AsBf16(Tensor t) => t.dtype == ScalarType.BFloat16 ? t : t.to(ScalarType.BFloat16);

    /// <summary>The largest magnitude counted (NaN as 0, Inf as 2^40).</summary>
    public float Max
    {
        get
        {
            for (int b = Bins - 1; b >= 0; b--)
                if (_counts[b] != 0) return ValueOf((ushort)b);
            throw new InvalidOperationException("the histogram is empty");
        }
    }

    /// <summary>
    /// Nearest-rank percentile: the smallest bf16 value v with count(|x| ≤ v) ≥ q·N, where q·N is rounded up to a whole
    /// rank (at least 1). q = 0.5 of 1..1000 is 500; q = 1 is the maximum.
    /// </summary>
    public float Percentile(double q)
    {
        if (!(q > 0 && q <= 1)) throw new ArgumentOutOfRangeException(nameof(q), q, "a quantile lies in (0, 1]");
        if (Count == 0) throw new InvalidOperationException("the histogram is empty");
        // Decimal keeps q·N exact for the decimal quantiles used (0.999 · 1000 is 999, not 999.0000000000001 → 1000).
        long rank = Math.Max(1, (long)Math.Ceiling((decimal)q * Count));
        long cumulative = 0;
        for (int b = 0; b < Bins; b++)
        {
            cumulative += _counts[b];
            if (cumulative >= rank) return ValueOf((ushort)b);
        }
        throw new InvalidOperationException("histogram counts do not add up to Count");
    }

    private unsafe ushort AddWords(ushort* p, long n)
    {
        var counts = _counts;
        int max = 0;
        for (long i = 0; i < n; i++)
        {
            ushort bin = BinOf(p[i]);
            counts[bin]++;
            if (bin > max) max = bin;
        }
        Count += n;
        return (ushort)max;
    }

    /// <summary>One thread's share of a large tensor.</summary>
    private sealed class Part
    {
        public readonly MagnitudeHistogram Counts = new();
        public int Max;
    }
}
