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

    /// <summary>FlipInto that also sets marks (bool, dst's shape) to where op's zero-out dropped an element.</summary>
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
    /// zero-out dropped, from the byte per element its kernel records; null when none is dropped.
    /// </summary>
    public static Tensor? FlipIntoRecordingDropped(Tensor src, Tensor dst, FlipOp op, long indexOffset,
        IFlipKernelLauncher launcher)
    {
        if (op.ZeroOutT is null)
        {
            FlipInto(src, dst, op, indexOffset, launcher);
            return null;
        }
        using var marks = Marks(dst);
        FlipInto(src, dst, op, indexOffset, launcher, marks);
        var indices = marks.flatten().nonzero().squeeze(1);
        if (indices.numel() > 0) return indices;
        indices.Dispose();
        return null;
    }

    /// <summary>BitFlip.StraightThroughGradient: grad, zeroed where flip(x) is dropped by op's zero-out.</summary>
    public static Tensor StraightThroughGradient(Tensor x, Tensor grad, FlipOp op, long indexOffset,
        IFlipKernelLauncher launcher)
    {
        if (op.ZeroOutT is null) return grad.clone();
        using var flipped = torch.empty(x.shape, x.dtype, device: x.device);
        using var marks = Marks(flipped);
        FlipInto(x, flipped, op, indexOffset, launcher, marks);
        return grad.masked_fill(marks, 0);
    }

    /// <summary>Room for the zero-out's record: every byte is written by the kernel that zeroes out.</summary>
    static Tensor Marks(Tensor like) => torch.empty(like.shape, ScalarType.Bool, device: like.device);
}
