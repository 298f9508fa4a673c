using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Bflora.Bitflip;

/// <summary>
/// Which Philox blocks one or two components (exp, frac) need per element. When both share a round count their
/// seed ranges are merged: with the layer's consecutive seeds they overlap, so a block both need is computed once
/// (5 blocks instead of 8 at n=16).
/// </summary>
public sealed class PhiloxPlan
{
    public readonly int Rounds, WordBits;
    /// <summary>Each distinct seed used, and how many words (from w0 on) each component takes from it.</summary>
    public readonly (int Seed, int UseA, int UseB)[] Steps;
    readonly (int Halves, int Seed, uint Mask) _a;
    readonly (int Halves, int Seed, uint Mask)? _b;

    PhiloxPlan(FlipFormat fmt, (int Halves, int Seed, uint Mask) a, (int Halves, int Seed, uint Mask)? b)
    {
        (_a, _b) = (a, b);
        Rounds = Philox.RoundsFor(a.Halves);
        WordBits = FlipFormats.WordBits(fmt);
        var seeds = new List<int>();
        foreach (var c in b is { } bb ? new[] { a, bb } : new[] { a })
            for (int j = 0; j < (c.Halves + 3) / 4; j++)
                if (!seeds.Contains(unchecked(c.Seed + j))) seeds.Add(unchecked(c.Seed + j));
        // Offsets by unchecked int subtraction, so a range that wrapped past 2^31 (as the original's i32 does) lines up.
        Steps = seeds.Select(k => (k, WordsUsed(unchecked(k - a.Seed), a.Halves),
            b is { } c2 ? WordsUsed(unchecked(k - c2.Seed), c2.Halves) : 0)).ToArray();
    }

    /// <summary>One plan when exp and frac share a round count (or only one is on), else one per component.</summary>
    public static PhiloxPlan[] For(FlipOp op, FlipFormat fmt)
    {
        var exp = op.ExpHalves is int ne ? (ne, op.SeedExp, FlipFormats.ExpMask(fmt)) : ((int, int, uint)?)null;
        var frac = op.FracHalves is int nf ? (nf, op.SeedFrac, FlipFormats.FracMask(fmt)) : ((int, int, uint)?)null;
        return (exp, frac) switch
        {
            ({ } e, { } f) when Philox.RoundsFor(e.Item1) == Philox.RoundsFor(f.Item1) => [new(fmt, e, f)],
            ({ } e, { } f) => [new(fmt, e, null), new(fmt, f, null)],
            ({ } e, null) => [new(fmt, e, null)],
            (null, { } f) => [new(fmt, f, null)],
            _ => [],
        };
    }

    public uint MaskA => _a.Mask;
    public uint MaskB => _b?.Mask ?? 0;

    /// <summary>The plan's combined mask for one element, by the reference formula.</summary>
    public uint ScalarMask(long index) =>
        (PhiloxMask.For(index, _a.Halves, _a.Seed, WordBits) & _a.Mask)
        | (_b is { } b ? PhiloxMask.For(index, b.Halves, b.Seed, WordBits) & b.Mask : 0);

    static int WordsUsed(int offset, int halves) =>
        offset < 0 ? 0 : offset < halves / 4 ? 4 : offset == halves / 4 ? halves % 4 : 0;
}

/// <summary>The Philox generator's masks on AVX-512: sixteen elements per vector, two vectors in flight.</summary>
public static unsafe class PhiloxVector
{
    /// <summary>masks[i] |= the plan's mask for element start+i.</summary>
    public static void OrMasks(uint* masks, long start, int count, PhiloxPlan plan)
    {
        int i = 0;
        if (FlipKernels.AllowVector512 && Avx512F.IsSupported)
        {
            var lane = Vector512.Create(0u, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
            var sixteen = Vector512.Create(16u);
            var keepA = Vector512.Create(plan.MaskA);
            var keepB = Vector512.Create(plan.MaskB);
            for (; i + 32 <= count; i += 32)
            {
                // The counter is the element index cut to 32 bits; lane additions wrap the same way.
                var counterX = Vector512.Create((uint)(start + i)) + lane;
                var counterY = counterX + sixteen;
                Vector512<uint> ax = Vector512<uint>.AllBitsSet, bx = ax, ay = ax, by = ax;
                foreach (var (seed, useA, useB) in plan.Steps)
                {
                    var (x, y) = Blocks(counterX, counterY, seed, plan.Rounds);
                    ax &= x.First(useA); bx &= x.First(useB);
                    ay &= y.First(useA); by &= y.First(useB);
                }
                (Vector512.Load(masks + i) | (keepA & ax) | (keepB & bx)).Store(masks + i);
                (Vector512.Load(masks + i + 16) | (keepA & ay) | (keepB & by)).Store(masks + i + 16);
            }
        }
        for (; i < count; i++) masks[i] |= plan.ScalarMask(start + i);
    }

    /// <summary>The four output words of sixteen Philox blocks.</summary>
    readonly struct Words(Vector512<uint> w0, Vector512<uint> w1, Vector512<uint> w2, Vector512<uint> w3)
    {
        /// <summary>AND of the first n words (all ones for n = 0).</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public Vector512<uint> First(int n) =>
            n switch { 0 => Vector512<uint>.AllBitsSet, 1 => w0, 2 => w0 & w1, 3 => w0 & w1 & w2, _ => w0 & w1 & w2 & w3 };
    }

    /// <summary>
    /// Philox4x32 with counters (x, 0, 0, 0) and (y, 0, 0, 0) in every lane, interleaved so that the two dependency
    /// chains of multiplies overlap.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static (Words, Words) Blocks(Vector512<uint> x0, Vector512<uint> y0, int seed, int rounds)
    {
        var (k0, k1) = Philox.Key(seed);
        var mul0 = Vector512.Create(Philox.M0);
        var mul2 = Vector512.Create(Philox.M2);
        Vector512<uint> x1 = default, x2 = default, x3 = default, y1 = default, y2 = default, y3 = default;
        for (int r = 0; r < rounds; r++)
        {
            var key0 = Vector512.Create(k0);
            var key1 = Vector512.Create(k1);
            var (xh0, xl0) = WideMultiply(x0, mul0);
            var (xh2, xl2) = WideMultiply(x2, mul2);
            var (yh0, yl0) = WideMultiply(y0, mul0);
            var (yh2, yl2) = WideMultiply(y2, mul2);
            (x0, x1, x2, x3) = (xh2 ^ x1 ^ key0, xl2, xh0 ^ x3 ^ key1, xl0);
            (y0, y1, y2, y3) = (yh2 ^ y1 ^ key0, yl2, yh0 ^ y3 ^ key1, yl0);
            k0 += Philox.W0; k1 += Philox.W1;
        }
        return (new Words(x0, x1, x2, x3), new Words(y0, y1, y2, y3));
    }

    /// <summary>High and low halves of the 64-bit lane products: vpmuludq covers the even lanes, a shift the odd.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static (Vector512<uint> Hi, Vector512<uint> Lo) WideMultiply(Vector512<uint> a, Vector512<uint> m)
    {
        var even = Avx512F.Multiply(a, m);
        var odd = Avx512F.Multiply((a.AsUInt64() >> 32).AsUInt32(), m);
        var highWord = Vector512.Create(0xFFFFFFFF00000000UL);
        var hi = (even >> 32) | (odd & highWord);
        var lo = (even & ~highWord) | (odd << 32);
        return (hi.AsUInt32(), lo.AsUInt32());
    }
}
