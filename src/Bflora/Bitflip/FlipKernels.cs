using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Bflora.Bitflip;

/// <summary>
/// The flip on raw contiguous memory. Work is split into the fast generator's fixed blocks of the global index space,
/// and every block's result is a function of global indices only, so the thread count never changes the output.
/// </summary>
public static unsafe class FlipKernels
{
    const int PhiloxChunk = 1024;

    /// <summary>Lets tests run the narrower paths on an AVX-512 machine; results are identical either way.</summary>
    internal static bool AllowVector512 = true;

    /// <summary>
    /// dst[i] = flip(src[i]) for the count elements whose global indices start at indexOffset.
    /// src may equal dst (in place); otherwise the two must not overlap.
    /// </summary>
    public static void Run(void* src, void* dst, long count, FlipFormat fmt, FlipOp op, long indexOffset, int maxThreads)
    {
        var work = new BlockWork(fmt, op);
        byte* s = (byte*)src, d = (byte*)dst;
        ForEachBlock(count, indexOffset, maxThreads, (block, start, n, local) =>
            work.Do(s + local * work.ElementBytes, d + local * work.ElementBytes, block, start, n));
    }

    /// <summary>
    /// gradOut[i] = grad[i] where flip(x[i]) survives op's zero-out, else 0: the straight-through gradient,
    /// regenerating each block's flip in a small per-thread buffer instead of a full-size tensor.
    /// </summary>
    public static void RunGradient(void* x, void* grad, void* gradOut, long count, FlipFormat fmt, FlipOp op,
        long indexOffset, int maxThreads)
    {
        if (op.ZeroOutThreshold is not float t) throw new ArgumentException("the gradient mask needs a zero-out threshold");
        var work = new BlockWork(fmt, op.WithoutZeroOut());
        uint firstDropped = ZeroOut.FirstDroppedBits(fmt, t);
        byte* xs = (byte*)x, g = (byte*)grad, go = (byte*)gradOut;
        ForEachBlock(count, indexOffset, maxThreads, (block, start, n, local) =>
        {
            long at = local * work.ElementBytes;
            s_scratch ??= GC.AllocateArray<byte>((int)FastMaskStream.BlockElements * 4, pinned: true);
            fixed (byte* scratch = s_scratch)
            {
                work.Do(xs + at, scratch, block, start, n);
                if (work.ElementBytes == 4) ZeroOut.Select32((uint*)scratch, (uint*)(g + at), (uint*)(go + at), n, firstDropped);
                else ZeroOut.Select16((ushort*)scratch, (ushort*)(g + at), (ushort*)(go + at), n, (ushort)firstDropped);
            }
        });
    }

    [ThreadStatic] static byte[]? s_scratch;

    delegate void BlockAction(long block, long start, int count, long localOffset);

    /// <summary>Runs action on each fixed block's part of [indexOffset, indexOffset+count), in parallel.</summary>
    static void ForEachBlock(long count, long indexOffset, int maxThreads, BlockAction action)
    {
        if (count == 0) return;
        if (indexOffset < 0) throw new ArgumentOutOfRangeException(nameof(indexOffset));
        long end = indexOffset + count;
        long firstBlock = indexOffset >> FastMaskStream.BlockShift, lastBlock = (end - 1) >> FastMaskStream.BlockShift;
        var options = new ParallelOptions { MaxDegreeOfParallelism = maxThreads > 0 ? maxThreads : Environment.ProcessorCount };
        Parallel.For(firstBlock, lastBlock + 1, options, b =>
        {
            long lo = Math.Max(indexOffset, b << FastMaskStream.BlockShift);
            long hi = Math.Min(end, (b + 1) << FastMaskStream.BlockShift);
            action(b, lo, (int)(hi - lo), lo - indexOffset);
        });
    }

    /// <summary>The per-block steps: copy, XOR the masks in, zero out.</summary>
    sealed class BlockWork(FlipFormat fmt, FlipOp op)
    {
        readonly bool _wide = FlipFormats.WordBits(fmt) == 32;
        public int ElementBytes => _wide ? 4 : 2;
        readonly uint _expBits = FlipFormats.ExpMask(fmt), _fracBits = FlipFormats.FracMask(fmt);
        readonly int[] _expPositions = FastMaskStream.BitPositions(FlipFormats.ExpMask(fmt));
        readonly int[] _fracPositions = FastMaskStream.BitPositions(FlipFormats.FracMask(fmt));
        readonly uint? _zeroBits = op.ZeroOutThreshold is float t ? ZeroOut.FirstDroppedBits(fmt, t) : null;
        readonly PhiloxPlan[] _philoxPlans = op.Rng == FlipRng.Philox ? PhiloxPlan.For(op, fmt) : [];

        [ThreadStatic] static List<(int Index, uint Bit)>? s_hits;

        public void Do(byte* src, byte* dst, long block, long start, int count)
        {
            long bytes = (long)count * (_wide ? 4 : 2);
            if (op.Rng == FlipRng.Philox)
            {
                if (src != dst) Buffer.MemoryCopy(src, dst, bytes, bytes);
                XorPhilox(dst, start, count);
                if (_zeroBits is uint zp) ZeroOutAll(dst, dst, count, zp);
                return;
            }
            var hits = s_hits ??= new List<(int, uint)>();
            hits.Clear();
            if (op.ExpHalves is int ne) CollectFast(hits, block, start, count, _expBits, _expPositions, ne, op.SeedExp);
            if (op.FracHalves is int nf) CollectFast(hits, block, start, count, _fracBits, _fracPositions, nf, op.SeedFrac);
            if (_zeroBits is uint z && src != dst)
            {
                // One pass over memory, as fast as a copy: dst = zero_out(src); then only the few flipped elements are
                // redone from src (reset, XOR every bit that hit them, zero-out again).
                ZeroOutAll(src, dst, count, z);
                foreach (var (i, _) in hits) Set(dst, i, Get(src, i));
                foreach (var (i, bit) in hits) Set(dst, i, Get(dst, i) ^ bit);
                foreach (var (i, _) in hits) Set(dst, i, (Get(dst, i) & _absBits) >= z ? 0 : Get(dst, i));
                return;
            }
            if (src != dst) Buffer.MemoryCopy(src, dst, bytes, bytes);
            foreach (var (i, bit) in hits) Set(dst, i, Get(dst, i) ^ bit);
            if (_zeroBits is uint zi) ZeroOutAll(dst, dst, count, zi);
        }

        readonly uint _absBits = FlipFormats.WordBits(fmt) == 32 ? 0x7FFFFFFFu : 0x7FFFu;

        uint Get(byte* p, int i) => _wide ? ((uint*)p)[i] : ((ushort*)p)[i];

        void Set(byte* p, int i, uint word)
        {
            if (_wide) ((uint*)p)[i] = word;
            else ((ushort*)p)[i] = (ushort)word;
        }

        void ZeroOutAll(byte* probeAndSource, byte* target, int count, uint firstDropped)
        {
            if (_wide) ZeroOut.Select32((uint*)probeAndSource, (uint*)probeAndSource, (uint*)target, count, firstDropped);
            else ZeroOut.Select16((ushort*)probeAndSource, (ushort*)probeAndSource, (ushort*)target, count, (ushort)firstDropped);
        }

        /// <summary>Appends (local element, bit) for every flipped bit of one component inside [start, start+count).</summary>
        static void CollectFast(List<(int, uint)> hits, long block, long start, int count, uint componentMask,
            int[] positions, int halves, int seed)
        {
            var walker = new FastMaskStream.Walker(seed, block, componentMask, halves, positions.Length);
            long skip = start - (block << FastMaskStream.BlockShift);
            for (long k = walker.Next(); k >= 0; k = walker.Next())
            {
                // A block's bit space is below 2^21, so 32-bit division suffices (and is much cheaper).
                int bitIndex = (int)k;
                long i = bitIndex / positions.Length - skip;
                if (i < 0) continue;
                if (i >= count) break;
                hits.Add(((int)i, 1u << positions[bitIndex % positions.Length]));
            }
        }

        void XorPhilox(byte* dst, long start, int count)
        {
            if (_philoxPlans.Length == 0) return;
            uint* masks = stackalloc uint[PhiloxChunk];
            for (int c = 0; c < count; c += PhiloxChunk)
            {
                int n = Math.Min(PhiloxChunk, count - c);
                new Span<uint>(masks, n).Clear();
                foreach (var plan in _philoxPlans) PhiloxVector.OrMasks(masks, start + c, n, plan);
                if (_wide)
                {
                    uint* w = (uint*)dst + c;
                    for (int i = 0; i < n; i++) w[i] ^= masks[i];
                }
                else
                {
                    ushort* w = (ushort*)dst + c;
                    for (int i = 0; i < n; i++) w[i] ^= (ushort)masks[i];
                }
            }
        }
    }
}

/// <summary>Zero-out done on bit patterns: for non-negative floats, value order equals unsigned word order.</summary>
public static unsafe class ZeroOut
{
    /// <summary>
    /// The smallest magnitude bit pattern whose fp32 value is ≥ t (so a word is kept iff its |bits| is below it);
    /// 0 (keep nothing) for t ≤ 0 or NaN. The +Inf pattern always qualifies, so NaNs and Infs are never kept.
    /// </summary>
    public static uint FirstDroppedBits(FlipFormat fmt, float t)
    {
        if (float.IsNaN(t)) return 0;
        uint lo = 0, hi = fmt == FlipFormat.Float32 ? 0x7F800000u : fmt == FlipFormat.BFloat16 ? 0x7F80u : 0x7C00u;
        while (lo < hi)
        {
            uint mid = lo + (hi - lo) / 2;
            if (FlipFormats.ToSingle(fmt, mid) >= t) hi = mid; else lo = mid + 1;
        }
        return lo;
    }

    /// <summary>
    /// Zeroes, in place, every one of count 16- or 32-bit words that the zero-out drops and returns their indices in
    /// ascending order. Chunks run in parallel; a vector with nothing to drop costs one compare.
    /// </summary>
    public static long[] ApplyRecording(void* p, long count, bool wide, uint firstDropped, int maxThreads)
    {
        const long chunk = FastMaskStream.BlockElements;
        long chunks = (count + chunk - 1) / chunk;
        var found = new List<long>?[chunks];
        var options = new ParallelOptions { MaxDegreeOfParallelism = maxThreads > 0 ? maxThreads : Environment.ProcessorCount };
        Parallel.For(0, chunks, options, c =>
        {
            long from = c * chunk, to = Math.Min(count, from + chunk);
            found[c] = wide ? Record((uint*)p, from, to, firstDropped, 0x7FFFFFFFu)
                : Record((ushort*)p, from, to, (ushort)firstDropped, (ushort)0x7FFF);
        });
        var all = new long[found.Sum(l => l?.Count ?? 0)];
        int at = 0;
        foreach (var list in found)
            if (list is not null) { list.CopyTo(all, at); at += list.Count; }
        return all;
    }

    /// <summary>Record for one word width: T is ushort (bf16, fp16) or uint (fp32); abs clears the sign bit.</summary>
    static List<long>? Record<T>(T* p, long from, long to, T firstDropped, T abs) where T : unmanaged, IBinaryInteger<T>
    {
        List<long>? found = null;
        long i = from;
        if (FlipKernels.AllowVector512 && Vector512.IsHardwareAccelerated)
        {
            var absVector = Vector512.Create(abs);
            var limit = Vector512.Create(firstDropped);
            for (; i + Vector512<T>.Count <= to; i += Vector512<T>.Count)
                if (Vector512.GreaterThanOrEqualAny(Vector512.Load(p + i) & absVector, limit))
                    Scalar(i, i + Vector512<T>.Count);
        }
        Scalar(i, to);
        return found;

        void Scalar(long a, long b)
        {
            for (long q = a; q < b; q++)
                if ((p[q] & abs) >= firstDropped) { p[q] = T.Zero; (found ??= new List<long>()).Add(q); }
        }
    }

    public static void Apply16(ushort* p, int count, ushort firstDropped) => Select16(p, p, p, count, firstDropped);

    public static void Apply32(uint* p, int count, uint firstDropped) => Select32(p, p, p, count, firstDropped);

    /// <summary>target[i] = probe[i] dropped ? 0 : source[i]; Apply16 is the case probe = source = target.</summary>
    public static void Select16(ushort* probe, ushort* source, ushort* target, int count, ushort firstDropped)
    {
        int i = 0;
        if (FlipKernels.AllowVector512 && Vector512.IsHardwareAccelerated)
        {
            var abs = Vector512.Create((ushort)0x7FFF);
            var limit = Vector512.Create(firstDropped);
            for (; i + Vector512<ushort>.Count <= count; i += Vector512<ushort>.Count)
                (Vector512.Load(source + i) & Vector512.LessThan(Vector512.Load(probe + i) & abs, limit)).Store(target + i);
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            var abs = Vector256.Create((ushort)0x7FFF);
            var limit = Vector256.Create(firstDropped);
            for (; i + Vector256<ushort>.Count <= count; i += Vector256<ushort>.Count)
                (Vector256.Load(source + i) & Vector256.LessThan(Vector256.Load(probe + i) & abs, limit)).Store(target + i);
        }
        for (; i < count; i++) target[i] = (probe[i] & 0x7FFF) >= firstDropped ? (ushort)0 : source[i];
    }

    public static void Select32(uint* probe, uint* source, uint* target, int count, uint firstDropped)
    {
        int i = 0;
        if (FlipKernels.AllowVector512 && Vector512.IsHardwareAccelerated)
        {
            var abs = Vector512.Create(0x7FFFFFFFu);
            var limit = Vector512.Create(firstDropped);
            for (; i + Vector512<uint>.Count <= count; i += Vector512<uint>.Count)
                (Vector512.Load(source + i) & Vector512.LessThan(Vector512.Load(probe + i) & abs, limit)).Store(target + i);
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            var abs = Vector256.Create(0x7FFFFFFFu);
            var limit = Vector256.Create(firstDropped);
            for (; i + Vector256<uint>.Count <= count; i += Vector256<uint>.Count)
                (Vector256.Load(source + i) & Vector256.LessThan(Vector256.Load(probe + i) & abs, limit)).Store(target + i);
        }
        for (; i < count; i++) target[i] = (probe[i] & 0x7FFFFFFF) >= firstDropped ? 0 : source[i];
    }
}
