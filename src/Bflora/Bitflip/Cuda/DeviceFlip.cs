using TorchSharp;
using static TorchSharp.torch;

namespace Bflora.Bitflip.Cuda;

/// <summary>
/// The flip on tensors whose memory only kernels can touch (CUDA), in the steps of the CPU engine: the generators'
/// kernels from flip_kernels.cu, then the zero-out's bookkeeping with tensor ops. Through a launcher that runs the
/// same kernels as host code, the tests hold this whole path to the reference on CPU tensors.
/// </summary>
public static class DeviceFlip
{
    /// <summary>BitFlip.FlipInto: dst = flip(src); dst contiguous, same shape and dtype; dst may be src.</summary>
    public static void FlipInto(Tensor src, Tensor dst, FlipOp op, long indexOffset, IFlipKernelLauncher launcher)
    {
        var fmt = FlipFormats.Of(src.dtype);
        using var dense = src.contiguous();
        ulong from = TensorBits.Address(dense), to = TensorBits.Address(dst);
        var args = FlipKernelArgs.For(from, to, dense.numel(), indexOffset, fmt, op);
        if (args.Count == 0) return;
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
    /// BitFlip.FlipIntoRecordingDropped: flip without the zero-out, then drop and record in one mask: the flat
    /// indices (int64, ascending, on dst's device) of the dropped elements, or null when none is dropped.
    /// </summary>
    public static Tensor? FlipIntoRecordingDropped(Tensor src, Tensor dst, FlipOp op, long indexOffset,
        IFlipKernelLauncher launcher)
    {
        if (op.ZeroOutThreshold is not float t)
        {
            FlipInto(src, dst, op, indexOffset, launcher);
            return null;
        }
        FlipInto(src, dst, op.WithoutZeroOut(), indexOffset, launcher);
        using var drop = Dropped(dst, t);
        var indices = drop.flatten().nonzero().squeeze(1);
        if (indices.numel() == 0)
        {
            indices.Dispose();
            return null;
        }
        dst.masked_fill_(drop, 0);
        return indices;
    }

    /// <summary>BitFlip.StraightThroughGradient: grad, zeroed where flip(x) is dropped by op's zero-out.</summary>
    public static Tensor StraightThroughGradient(Tensor x, Tensor grad, FlipOp op, long indexOffset,
        IFlipKernelLauncher launcher)
    {
        if (op.ZeroOutThreshold is not float t) return grad.clone();
        using var flipped = torch.empty(x.shape, x.dtype, device: x.device);
        FlipInto(x, flipped, op.WithoutZeroOut(), indexOffset, launcher);
        using var drop = Dropped(flipped, t);
        return grad.masked_fill(drop, 0);
    }

    /// <summary>
    /// Where the zero-out drops a word: where its value widened to fp32 is not below t in magnitude (NaN included),
    /// the rule the reference states; fp32 holds every bf16 and fp16 value exactly.
    /// </summary>
    static Tensor Dropped(Tensor words, float t)
    {
        using var magnitude = words.abs();
        using var wide = magnitude.to(ScalarType.Float32);
        using var kept = wide.lt(t);
        return kept.logical_not();
    }
}
