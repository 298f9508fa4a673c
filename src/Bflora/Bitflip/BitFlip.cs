using System.Runtime.Intrinsics;
using TorchSharp;
using static TorchSharp.torch;

namespace Bflora.Bitflip;

/// <summary>The flip on CPU tensors, through the fast kernels. Indices are flat row-major.</summary>
public static unsafe class BitFlip
{
    /// <summary>
    /// A new contiguous tensor holding flip(x). indexOffset is the global index of x's first element, so a shard of a
    /// larger tensor flips exactly as that part of the whole would. maxThreads ≤ 0 means torch.get_num_threads().
    /// </summary>
    public static Tensor Flip(Tensor x, FlipOp op, long indexOffset = 0, int maxThreads = 0)
    {
        var result = torch.empty(x.shape, x.dtype);
        FlipInto(x, result, op, indexOffset, maxThreads);
        return result;
    }

    /// <summary>
    /// Writes flip(src) into dst, an existing contiguous tensor of the same shape and dtype (e.g. a reused bf16
    /// buffer). dst may be src itself when src is contiguous, for an in-place flip.
    /// </summary>
    public static void FlipInto(Tensor src, Tensor dst, FlipOp op, long indexOffset = 0, int maxThreads = 0)
    {
        var fmt = FlipFormats.Of(src.dtype);
        if (dst.dtype != src.dtype) throw new ArgumentException($"flip destination is {dst.dtype}, source {src.dtype}");
        if (!dst.shape.SequenceEqual(src.shape)) throw new ArgumentException("flip destination shape differs from the source");
        if (!dst.is_contiguous()) throw new ArgumentException("flip destination must be contiguous");
        using var dense = src.contiguous();
        FlipKernels.Run(TensorBits.Pointer(dense), TensorBits.Pointer(dst), dense.numel(), fmt, op, indexOffset,
            Threads(maxThreads));
    }

    /// <summary>
    /// The flip's straight-through gradient for input x: grad, zeroed where the zero-out drops the flipped value.
    /// The masks are regenerated from op's seeds, so nothing from the forward is needed but x.
    /// </summary>
    public static Tensor StraightThroughGradient(Tensor x, Tensor grad, FlipOp op, long indexOffset = 0, int maxThreads = 0)
    {
        if (!grad.shape.SequenceEqual(x.shape) || grad.dtype != x.dtype)
            throw new ArgumentException("gradient shape or dtype differs from the input");
        if (op.ZeroOutT is null) return grad.clone();
        var fmt = FlipFormats.Of(x.dtype);
        using var denseX = x.contiguous();
        using var denseGrad = grad.contiguous();
        var result = torch.empty(x.shape, x.dtype);
        FlipKernels.RunGradient(TensorBits.Pointer(denseX), TensorBits.Pointer(denseGrad), TensorBits.Pointer(result),
            result.numel(), fmt, op, indexOffset, Threads(maxThreads));
        return result;
    }

    /// <summary>
    /// Flat indices (int64, ascending) of the elements of src that op's zero-out dropped, given flipped = flip(src);
    /// null when there are none or op has no zero-out. A dropped element reads +0 (all bits clear) in flipped, so
    /// one vectorised read-only scan finds the few candidates, and each is settled exactly by regenerating its own masks.
    /// </summary>
    public static Tensor? DroppedPositions(Tensor src, Tensor flipped, FlipOp op, long indexOffset = 0)
    {
        if (op.ZeroOutThreshold is not float t) return null;
        var fmt = FlipFormats.Of(src.dtype);
        using var denseSrc = src.contiguous();
        using var denseFlipped = flipped.contiguous();
        long n = denseFlipped.numel();
        bool wide = FlipFormats.WordBits(fmt) == 32;
        void* s = TensorBits.Pointer(denseSrc), f = TensorBits.Pointer(denseFlipped);
        var noZeroOut = op.WithoutZeroOut();
        var dropped = new List<long>();
        foreach (long i in ZeroWords(f, n, wide))
        {
            uint word = wide ? ((uint*)s)[i] : ((ushort*)s)[i];
            uint value = ReferenceFlip.Apply([word], fmt, noZeroOut, indexOffset + i)[0];
            if (!(Math.Abs(FlipFormats.ToSingle(fmt, value)) < t)) dropped.Add(i);
        }
        return dropped.Count == 0 ? null : torch.tensor(dropped.ToArray(), ScalarType.Int64);
    }

    /// <summary>Indices of the all-zero words among count 16- or 32-bit words, skipping zero-free vectors.</summary>
    static List<long> ZeroWords(void* p, long count, bool wide)
    {
        var found = new List<long>();
        long bytes = count * (wide ? 4 : 2), at = 0;
        byte* b = (byte*)p;
        if (Vector512.IsHardwareAccelerated)
            for (; at + 64 <= bytes; at += 64)
            {
                bool any = wide
                    ? Vector512.EqualsAny(Vector512.Load((uint*)(b + at)), Vector512<uint>.Zero)
                    : Vector512.EqualsAny(Vector512.Load((ushort*)(b + at)), Vector512<ushort>.Zero);
                if (any) Scalar(at, at + 64);
            }
        Scalar(at, bytes);
        return found;

        void Scalar(long from, long to)
        {
            for (long q = from; q < to; q += wide ? 4 : 2)
                if ((wide ? *(uint*)(b + q) : *(ushort*)(b + q)) == 0) found.Add(q / (wide ? 4 : 2));
        }
    }

    static int Threads(int maxThreads) => maxThreads > 0 ? maxThreads : torch.get_num_threads();
}

/// <summary>
/// Autograd wrapper: forward flips; backward is straight-through, zeroed where the zero-out fired. The masks are
/// regenerated from the seeds on the saved pre-flip input rather than stored.
/// </summary>
public sealed class BitFlipFunction : torch.autograd.SingleTensorFunction<BitFlipFunction>
{
    public override string Name => "BitFlip";

    /// <summary>Applies op to x with gradient; returns x itself when op is the identity.</summary>
    public static Tensor Apply(Tensor x, FlipOp op) => op.IsIdentity ? x : apply(x, op);

    public override Tensor forward(torch.autograd.AutogradContext ctx, params object[] vars)
    {
        var x = (Tensor)vars[0];
        var op = (FlipOp)vars[1];
        ctx.save_data("op", op);
        if (op.ZeroOutT is not null) ctx.save_for_backward(new List<Tensor> { x });
        return BitFlip.Flip(x, op);
    }

    /// <summary>One gradient per forward argument; the op gets none.</summary>
    public override List<Tensor> backward(torch.autograd.AutogradContext ctx, Tensor grad)
    {
        var op = (FlipOp)ctx.get_data("op");
        if (op.ZeroOutT is null) return new List<Tensor> { grad.clone(), null! };
        var x = ctx.get_saved_variables()[0];
        return new List<Tensor> { BitFlip.StraightThroughGradient(x.detach(), grad, op), null! };
    }
}
