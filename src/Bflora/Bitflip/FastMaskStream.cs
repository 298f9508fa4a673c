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
    /// u = m·2^e with m in [√½, √2); c = m rounded to a multiple of 1/64; ln m = ln c + 2·atanh((m−c)/(m+c)), whose
    /// series needs four terms because |(m−c)/(m+c)| ≤ 1/180. Relative error is a few ulp.
    /// </summary>
    public static double Log(double u)
    {
        var (m, e) = Split(u);
        int k = (int)(m * 64 + 0.5);
        double c = k / 64.0;
        double s = (m - c) / (m + c), s2 = s * s;
        double series = 1.0 + s2 * (Third + s2 * (Fifth + s2 * Seventh));
        return e * Ln2 + LnOf64ths[k] + 2 * s * series;
    }

    /// <summary>u = m·2^e with m in [√½, √2); subnormals are normalised by 2^54 first.</summary>
    static (double M, int E) Split(double u)
    {
        long bits = BitConverter.DoubleToInt64Bits(u);
        int e = (int)(bits >> 52) - 1023, shift = 0;
        if (e == -1023)
        {
            bits = BitConverter.DoubleToInt64Bits(u * 18014398509481984.0);
            e = (int)(bits >> 52) - 1023;
            shift = 54;
        }
        double m = BitConverter.Int64BitsToDouble((bits & 0x000FFFFFFFFFFFFFL) | 0x3FF0000000000000L);
        if (m > Sqrt2) { m *= 0.5; e++; }
        return (m, e - shift);
    }

    /// <summary>ln(k/64) for k = 45..91 (the c values), by the plain atanh series to s^25, |s| ≤ 0.18 there.</summary>
    internal static readonly double[] LnOf64ths = Enumerable.Range(0, 92).Select(k => k < 45 ? 0.0 : SeriesLog(k / 64.0)).ToArray();

    static double SeriesLog(double m)
    {
        double s = (m - 1) / (m + 1), s2 = s * s, series = 1.0 / 25;
        for (int k = 23; k >= 1; k -= 2) series = 1.0 / k + s2 * series;
        return 2 * s * series;
    }

    const double Third = 1.0 / 3, Fifth = 1.0 / 5, Seventh = 1.0 / 7;
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
        readonly double _perLogKeep;
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
            // p = 1 (n = 0) flips every bit: a gap of zero, where 1 / ln(1 − p) has no value.
            _perLogKeep = halves == 0 ? 0 : 1.0 / LogKeep(halves);
            _bitCount = BlockElements * bitsPerElement;
            _draw = 0; _spare = 0; _hasSpare = false; _position = -1;
        }

        /// <summary>The next flipped bit's index in the block's bit space, or -1 when the block has no more.</summary>
        public long Next()
        {
            if (_position >= _bitCount) return -1;
            double gap = Math.Floor(Log(NextUniform()) * _perLogKeep);
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
