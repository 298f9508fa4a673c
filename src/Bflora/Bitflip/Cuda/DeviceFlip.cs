using TorchSharp;
using static TorchSharp.torch;

namespace Bflora.Bitflip.Cuda;

/// <summary>
/// The flip on tensors whose memory only kernels can touch (CUDA), in the steps of the CPU engine: the generators'
/// kernels from flip_kernels.cu, whose zero-out also records what it dropped, one byte per element. Through a launcher that runs the
/// same kernels as host code, the tests hold this whole path to the reference on CPU tensors.
/// </summary>
public static class DeviceFlip
{
    /// <summary>BitFlip.FlipInto: dst = flip(src); dst contiguous, same shape and dtype; dst may be src.</summary>
    public static void FlipInto(Tensor src, Tensor dst, FlipOp op, long indexOffset, IFlipKernelLauncher launcher) =>
        FlipInto(src, dst, op, indexOffset, launcher, marks: null);

    /// <summary>FlipInto that also sets marks (bool, dst's shape), when given, to where op's zero-out dropped an element.</summary>
    static void FlipInto(Tensor src, Tensor dst, FlipOp op, long indexOffset, IFlipKernelLauncher launcher, Tensor? marks)
    {
        var fmt = FlipFormats.Of(src.dtype);
        using var dense = src.contiguous();
        ulong from = TensorBits.Address(dense), to = TensorBits.Address(dst);
        var args = FlipKernelArgs.For(from, to, dense.numel(), indexOffset, fmt, op);
        if (args.Count == 0) return;
        if (marks is not null) args.Marks = TensorBits.Address(marks);
        if (op.Rng == FlipRng.Philox)
        {
            launcher.Launch(FlipKernel.Philox, args, args.Count);
            return;
        }
        // The fast generator XORs its few flipped bits into a copy of the source, then zeroes out in place.
        if (from != to) dst.copy_(dense);
        if (args.Components > 0) launcher.Launch(FlipKernel.Fast, args, args.FastBlocks * args.Components);
        if (args.ZeroOut != 0) launcher.Launch(FlipKernel.ZeroOut, args, args.Count);
    }

    /// <summary>
    /// BitFlip.FlipIntoRecordingDropped: the flat indices (int64, ascending, on dst's device) of the elements the
    /// zero-out dropped, from the byte per element its kernel records; null when none is dropped. Counting them makes
    /// the host wait for the device; <see cref="FlipIntoMarkingDropped"/> does not.
    /// </summary>
    public static Tensor? FlipIntoRecordingDropped(Tensor src, Tensor dst, FlipOp op, long indexOffset,
        IFlipKernelLauncher launcher)
    {
        using var marks = FlipIntoMarkingDropped(src, dst, op, indexOffset, launcher);
        if (marks is null) return null;
        var indices = marks.flatten().nonzero().squeeze(1);
        if (indices.numel() > 0) return indices;
        indices.Dispose();
        return null;
    }

    /// <summary>FlipInto that also returns where op's zero-out dropped an element (bool, dst's shape); null without a zero-out.</summary>
    public static Tensor? FlipIntoMarkingDropped(Tensor src, Tensor dst, FlipOp op, long indexOffset,
        IFlipKernelLauncher launcher)
    {
        if (op.ZeroOutT is null)
        {
            FlipInto(src, dst, op, indexOffset, launcher);
            return null;
        }
        var marks = Marks(dst);
        FlipInto(src, dst, op, indexOffset, launcher, marks);
        return marks;
    }

    /// <summary>
    /// LoraFlipFunction.Correct from the weight flip's marks, in one launch and without a host sync: gradA [r, in]
    /// and gradB [out, r] (float32, contiguous) lose, in place, what the dropped weight positions contributed.
    /// g [tokens, out], x2 [tokens, in], A and B are in the layer's dtype.
    /// </summary>
    public static void CorrectDroppedLoraGradients(Tensor gradA, Tensor gradB, Tensor g, Tensor x2, Tensor loraA,
        Tensor loraB, Tensor marks, double scaling, IFlipKernelLauncher launcher)
    {
        if (gradA.dtype != ScalarType.Float32 || gradB.dtype != ScalarType.Float32 || !gradA.is_contiguous() || !gradB.is_contiguous())
            throw new ArgumentException("the corrected LoRA gradients must be contiguous float32");
        long tokens = g.size(0);
        if (tokens == 0 || loraA.size(0) == 0) return;
        using var gd = g.contiguous();
        using var xd = x2.contiguous();
        using var ad = loraA.contiguous();
        using var bd = loraB.contiguous();
        int chunks = (int)((tokens + LoraCorrectionArgs.TokensPerThread - 1) / LoraCorrectionArgs.TokensPerThread);
        var args = new LoraCorrectionArgs
        {
            Marks = TensorBits.Address(marks), G = TensorBits.Address(gd), X = TensorBits.Address(xd),
            A = TensorBits.Address(ad), B = TensorBits.Address(bd),
            GradA = TensorBits.Address(gradA), GradB = TensorBits.Address(gradB),
            Tokens = tokens, OutFeatures = bd.size(0), InFeatures = ad.size(1),
            MinusScaling = (float)-scaling, Rank = (int)ad.size(0), Format = LoraCorrectionArgs.FormatOf(FlipFormats.Of(gd.dtype)),
            Chunk = LoraCorrectionArgs.TokensPerThread, Chunks = chunks,
        };
        launcher.Launch(FlipKernel.LoraCorrection, args, args.Threads);
    }

    /// <summary>BitFlip.StraightThroughGradient: grad, zeroed where flip(x) is dropped by op's zero-out.</summary>
    public static Tensor StraightThroughGradient(Tensor x, Tensor grad, FlipOp op, long indexOffset,
        IFlipKernelLauncher launcher)
    {
        if (op.ZeroOutT is null) return grad.clone();
        using var flipped = torch.empty(x.shape, x.dtype, device: x.device);
        using var marks = FlipIntoMarkingDropped(x, flipped, op, indexOffset, launcher)!;
        return grad.masked_fill(marks, 0);
    }

    /// <summary>
    /// Room for the zero-out's record: every byte is written by the kernel that zeroes out. The flip's destination is
    /// contiguous, so a record laid out like it is indexed as the kernel indexes it.
    /// </summary>
    static Tensor Marks(Tensor like) => torch.empty_like(like, ScalarType.Bool);
}
