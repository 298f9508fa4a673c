using System.Runtime.CompilerServices;

namespace Bflora.Bitflip;

/// <summary>
/// The "fast" generator's definition. The flat element index space of the full tensor is cut into fixed blocks of
/// <see cref="BlockElements"/>. In each block, the bits selected by a component mask are laid end to end
/// (element-major, bit positions low to high) and the flipped ones are found by geometric gaps, each gap drawn by
/// inverse CDF from a uniform of a Philox4x32-10 stream keyed by (seed, block). So a mask bit is 1 independently with
/// probability 0.5^n, and the result depends only on (seed, element index, n, format, mask).
/// </summary>
public static class FastMaskStream
{
    public const int BlockShift = 16;
    public const long BlockElements = 1L << BlockShift;

    /// <summary>Domain word in the counter, so these streams never meet the Philox generator's words.</summary>
    const uint Domain = 0x666C6970u;

    /// <summary>ln(1 - 0.5^n), with a series where 1 - p would round to 1 in double.</summary>
    public static double LogKeep(int halves)
    {
        double p = Math.ScaleB(1.0, -halves);
        return halves < 27 ? Log(1.0 - p) : -(p + p * p / 2);
    }

    /// <summary>
    /// Natural log of a positive finite double from IEEE +, −, ×, ÷ only, in a fixed order, so the gaps (and hence the
    /// masks) are the same on every machine and libm, which a resumed run or another backend relies on.
    /// Relative error is a few ulp: u = m·2^e with m in [√½, √2), ln m = 2·atanh((m−1)/(m+1)) by its series.
    /// </summary>
    public static double Log(double u)
    {
        long bits = BitConverter.DoubleToInt64Bits(u);
        int e = (int)(bits >> 52) - 1023;
        double m = BitConverter.Int64BitsToDouble((bits & 0x000FFFFFFFFFFFFFL) | 0x3FF0000000000000L);
        if (e == -1023)
        {
            // Subnormal: normalise by 2^54 first.
            return Log(u * 18014398509481984.0) - 54 * Ln2;
        }
        if (m > Sqrt2) { m *= 0.5; e++; }
        double s = (m - 1) / (m + 1), s2 = s * s;
        double series = OddReciprocals[^1];
        for (int i = OddReciprocals.Length - 2; i >= 0; i--) series = OddReciprocals[i] + s2 * series;
        return e * Ln2 + 2 * s * series;
    }

    /// <summary>1/1, 1/3, …, 1/25: the atanh series to s^25, below an ulp for |s| ≤ 0.172.</summary>
    static readonly double[] OddReciprocals = Enumerable.Range(0, 13).Select(k => 1.0 / (2 * k + 1)).ToArray();

    const double Ln2 = 0.6931471805599453094;
    const double Sqrt2 = 1.4142135623730951;

    /// <summary>The set bit positions of a component mask, low to high.</summary>
    public static int[] BitPositions(uint mask)
    {
        var list = new List<int>();
        for (int b = 0; b < 32; b++) if ((mask >> b & 1) != 0) list.Add(b);
        return list.ToArray();
    }

    /// <summary>Walks the flipped bits of one block, in increasing order of their position in the block's bit space.</summary>
    public struct Walker
    {
        readonly uint _k0, _k1, _blockHigh, _mask;
        readonly double _logKeep;
        readonly long _bitCount;
        uint _draw;
        double _spare;
        bool _hasSpare;
        long _position;

        public Walker(int seed, long block, uint componentMask, int halves, int bitsPerElement)
        {
            (_k0, _k1) = ((uint)seed, (uint)block);
            _blockHigh = (uint)(block >> 32);
            _mask = componentMask;
            _logKeep = LogKeep(halves);
            _bitCount = BlockElements * bitsPerElement;
            _draw = 0; _spare = 0; _hasSpare = false; _position = -1;
        }

        /// <summary>The next flipped bit's index in the block's bit space, or -1 when the block has no more.</summary>
        public long Next()
        {
            if (_position >= _bitCount) return -1;
            double gap = Math.Floor(Log(NextUniform()) / _logKeep);
            // Comparing in double first keeps a huge gap from overflowing the long.
            if (gap >= _bitCount - _position) { _position = _bitCount; return -1; }
            _position += 1 + (long)gap;
            return _position < _bitCount ? _position : -1;
        }

        /// <summary>Uniform in (0, 1] with 53 random bits; two per Philox block. A block uses at most 2^21 of them,
        /// so a 32-bit draw counter never wraps.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        double NextUniform()
        {
            if (_hasSpare) { _hasSpare = false; return _spare; }
            var (w0, w1, w2, w3) = Philox.Block(_draw, _blockHigh, _mask, Domain, _k0, _k1, 10);
            _draw++;
            _spare = ToUniform(w2, w3);
            _hasSpare = true;
            return ToUniform(w0, w1);
        }

        static double ToUniform(uint hi, uint lo) => ((((ulong)hi << 21) | (lo >> 11)) + 1) * (1.0 / (1UL << 53));
    }
}
