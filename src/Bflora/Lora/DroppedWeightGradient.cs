using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Bflora.Bitflip;
using TorchSharp;
using static TorchSharp.torch;

namespace Bflora.Lora;

/// <summary>
/// The weight gradient at the positions the weight flip's zero-out dropped, G_k = Σ_m g[m, o_k]·x_f[m, i_k] for the
/// flat indices k = o·in + i, in fp32: what the LoRA correction removes from dA and dB. It costs K·tokens
/// multiply-adds instead of the out·in·tokens of forming gᵀx_f whole.
/// With many drops, g and x_f are first copied transposed into fp32 [features, tokens], so that each drop is one
/// contiguous, vectorised dot product. With few, each drop reads its two columns in place, a cache line per token,
/// which is cheaper than the two transposing copies. Both ways sum every product in one order (eight lanes, token m
/// in lane m mod 8, then the lanes 0 to 7), so the choice never changes a bit of the result; nor does the thread
/// count, since each dot product is summed by one thread.
/// </summary>
public static unsafe class DroppedWeightGradient
{
    public const int Lanes = 8;

    /// <summary>
    /// Columns are read in place below (out + in) / this many drops. Measured on the demo model's layers (2,048
    /// tokens, out + in = 1,024): the copies cost 1.8 ms and then 0.3 µs a drop, in place 3.6 µs a drop.
    /// </summary>
    const long TransposeRatio = 2;

    /// <summary>
    /// G at <paramref name="dropped"/> (int64 flat indices into [out, in]) for g [tokens, out] and x_f [tokens, in] of
    /// one float dtype (bf16, fp16 or fp32) on the CPU; fp32 [K]. Up to <paramref name="maxThreads"/> threads (0:
    /// libtorch's thread count, as the flip kernels use). <paramref name="transposed"/> chooses the way (for tests);
    /// null decides by the drop count.
    /// </summary>
    public static Tensor AtDrops(Tensor g, Tensor x2, Tensor dropped, int maxThreads = 0, bool? transposed = null)
    {
        if (g.device_type != DeviceType.CPU) throw new ArgumentException("the index-list correction runs on the CPU");
        if (g.dtype != x2.dtype || g.dtype is not (ScalarType.BFloat16 or ScalarType.Float16 or ScalarType.Float32))
            throw new ArgumentException($"g and x_f must share a float dtype, not {g.dtype} and {x2.dtype}");
        long tokens = g.size(0), outFeatures = g.size(1), inFeatures = x2.size(1), count = dropped.numel();
        var result = empty(count, ScalarType.Float32);
        if (count == 0) return result;
        using var indices = dropped.to(ScalarType.Int64).contiguous();
        var options = new ParallelOptions { MaxDegreeOfParallelism = BitFlip.Threads(maxThreads) };
        void Run<T>(void* gp, void* xp, long gTokenStride, long xTokenStride) where T : unmanaged =>
            ForEachDrop(new Columns<T>((T*)gp, (T*)xp, tokens, gTokenStride, xTokenStride), indices, inFeatures, result,
                options);
        if (transposed ?? count * TransposeRatio >= outFeatures + inFeatures)
        {
            using var gT = empty(new[] { outFeatures, tokens }, ScalarType.Float32);
            gT.copy_(g.t());
            using var xT = empty(new[] { inFeatures, tokens }, ScalarType.Float32);
            xT.copy_(x2.t());
            Run<float>(TensorBits.Pointer(gT), TensorBits.Pointer(xT), 1, 1);
        }
        else
        {
            using var gc = g.contiguous();
            using var xc = x2.contiguous();
            void* gp = TensorBits.Pointer(gc), xp = TensorBits.Pointer(xc);
            if (g.dtype == ScalarType.BFloat16) Run<BFloat16Bits>(gp, xp, outFeatures, inFeatures);
            else if (g.dtype == ScalarType.Float16) Run<Half>(gp, xp, outFeatures, inFeatures);
            else Run<float>(gp, xp, outFeatures, inFeatures);
        }
        return result;
    }

    /// <summary>
    /// Where drop (o, i)'s two operands lie: feature o of g and feature i of x_f, token m of feature f at
    /// f·featureStride + m·tokenStride. In place that is [tokens, features] (token stride = features); after the
    /// transposing copies, [features, tokens] (token stride 1).
    /// </summary>
    readonly struct Columns<T>(T* g, T* x, long tokens, long gTokenStride, long xTokenStride) where T : unmanaged
    {
        public readonly long Tokens = tokens, GTokenStride = gTokenStride, XTokenStride = xTokenStride;
        readonly long _gFeatureStride = gTokenStride == 1 ? tokens : 1, _xFeatureStride = xTokenStride == 1 ? tokens : 1;
        public bool Contiguous => GTokenStride == 1 && XTokenStride == 1;
        public T* G(long o) => g + o * _gFeatureStride;
        public T* X(long i) => x + i * _xFeatureStride;
    }

    static void ForEachDrop<T>(Columns<T> at, Tensor indices, long inFeatures, Tensor result, ParallelOptions options)
        where T : unmanaged
    {
        long* ip = (long*)TensorBits.Pointer(indices);
        float* rp = (float*)TensorBits.Pointer(result);
        long count = indices.numel();
        bool vectors = at.Contiguous && typeof(T) == typeof(float) && Vector256.IsHardwareAccelerated;
        const long chunk = 256;
        Parallel.For(0, (count + chunk - 1) / chunk, options, c =>
        {
            for (long k = c * chunk, end = Math.Min(count, k + chunk); k < end; k++)
            {
                T* a = at.G(ip[k] / inFeatures), b = at.X(ip[k] % inFeatures);
                rp[k] = vectors ? Dot((float*)a, (float*)b, at.Tokens)
                    : DotReference(a, at.GTokenStride, b, at.XTokenStride, at.Tokens);
            }
        });
    }

    /// <summary>
    /// The vectorised dot product of two contiguous fp32 runs. Products and sums are separate IEEE operations (no fused
    /// multiply-add), lane by lane as in <see cref="DotReference"/>, which it equals bit for bit.
    /// </summary>
    static float Dot(float* a, float* b, long n)
    {
        var acc = Vector256<float>.Zero;
        long m = 0;
        for (; m + Lanes <= n; m += Lanes)
            acc += Vector256.Load(a + m) * Vector256.Load(b + m);
        Span<float> lanes = stackalloc float[Lanes];
        acc.CopyTo(lanes);
        for (int j = 0; m + j < n; j++) lanes[j] += a[m + j] * b[m + j];
        return SumLanes(lanes);
    }

    /// <summary>The plain loop: n tokens, a's m-th at a[m·strideA], widened exactly to fp32.</summary>
    internal static float DotReference<T>(T* a, long strideA, T* b, long strideB, long n) where T : unmanaged
    {
        Span<float> lanes = stackalloc float[Lanes];
        for (long m = 0; m < n; m++)
        {
            float product = Widen(a[m * strideA]) * Widen(b[m * strideB]);
            lanes[(int)(m % Lanes)] += product;
        }
        return SumLanes(lanes);
    }

    static float Widen<T>(T v) where T : unmanaged
    {
        if (typeof(T) == typeof(float)) return Unsafe.As<T, float>(ref v);
        if (typeof(T) == typeof(Half)) return (float)Unsafe.As<T, Half>(ref v);
        return BitConverter.Int32BitsToSingle(Unsafe.As<T, ushort>(ref v) << 16);
    }

    static float SumLanes(ReadOnlySpan<float> lanes)
    {
        float sum = 0;
        foreach (float lane in lanes) sum += lane;
        return sum;
    }

    /// <summary>A bf16 element as its 16 bits.</summary>
    readonly struct BFloat16Bits
    {
        public readonly ushort Bits;
    }
}
