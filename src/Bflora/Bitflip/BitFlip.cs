using Bflora.Bitflip.Cuda;
using TorchSharp;
using static TorchSharp.torch;

namespace Bflora.Bitflip;

/// <summary>
/// The flip on tensors, through the CPU engine's kernels or, for CUDA tensors, the device kernels of
/// <see cref="DeviceFlip"/>; both give the reference's bits. Indices are flat row-major.
/// </summary>
public static unsafe class BitFlip
{
    /// <summary>
    /// A new contiguous tensor holding flip(x). indexOffset is the global index of x's first element, so a shard of a
    /// larger tensor flips exactly as that part of the whole would. maxThreads ≤ 0 means torch.get_num_threads().
    /// </summary>
    public static Tensor Flip(Tensor x, FlipOp op, long indexOffset = 0, int maxThreads = 0)
    {
        var result = torch.empty(x.shape, x.dtype, device: x.device);
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
        if (!SameShape(dst, src)) throw new ArgumentException("flip destination shape differs from the source");
        if (!dst.is_contiguous()) throw new ArgumentException("flip destination must be contiguous");
        if (!Devices.ComputeDevice.Same(dst.device, src.device))
            throw new ArgumentException($"flip destination is on {dst.device}, source on {src.device}");
        if (DeviceKernels(src) is { } gpu)
        {
            DeviceFlip.FlipInto(src, dst, op, indexOffset, gpu);
            return;
        }
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
        if (!SameShape(grad, x) || grad.dtype != x.dtype)
            throw new ArgumentException("gradient shape or dtype differs from the input");
        if (DeviceKernels(x) is { } gpu) return DeviceFlip.StraightThroughGradient(x, grad, op, indexOffset, gpu);
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
    /// FlipInto that also returns the flat indices (int64, ascending) of the elements the zero-out dropped; null when
    /// there are none or op has no zero-out. The masks are XORed in without zero-out, then one scan zeroes and records
    /// what is dropped: the same bits as FlipInto, and no mask has to be regenerated to know where it fired.
    /// </summary>
    public static Tensor? FlipIntoRecordingDropped(Tensor src, Tensor dst, FlipOp op, long indexOffset = 0, int maxThreads = 0)
    {
        if (DeviceKernels(src) is { } gpu) return DeviceFlip.FlipIntoRecordingDropped(src, dst, op, indexOffset, gpu);
        if (op.ZeroOutThreshold is not float t)
        {
            FlipInto(src, dst, op, indexOffset, maxThreads);
            return null;
        }
        FlipInto(src, dst, op.WithoutZeroOut(), indexOffset, maxThreads);
        var fmt = FlipFormats.Of(dst.dtype);
        var dropped = ZeroOut.ApplyRecording(TensorBits.Pointer(dst), dst.numel(), FlipFormats.WordBits(fmt) == 32,
            ZeroOut.FirstDroppedBits(fmt, t), Threads(maxThreads));
        return dropped.Length == 0 ? null : torch.tensor(dropped, ScalarType.Int64);
    }

    /// <summary>
    /// FlipInto that also returns where the zero-out dropped elements, as the engine records it without waiting:
    /// int64 flat indices from the CPU engine (null when none was dropped), a bool per element of dst from the device
    /// kernels (counting the drops there would make the host wait for the device). Null when op has no zero-out.
    /// <see cref="ZeroWhereDropped_"/> and LoraFlipFunction.Correct read either form.
    /// </summary>
    public static Tensor? FlipIntoWithDropRecord(Tensor src, Tensor dst, FlipOp op) =>
        DeviceKernels(src) is { } gpu ? DeviceFlip.FlipIntoMarkingDropped(src, dst, op, 0, gpu) : FlipIntoRecordingDropped(src, dst, op);

    /// <summary>
    /// Zeroes, in place, the elements of grad (contiguous, the flipped tensor's shape) that a drop record names, and
    /// returns grad: the backward owns the gradient it just formed, so no copy of an activation-sized tensor is made.
    /// </summary>
    public static Tensor ZeroWhereDropped_(Tensor grad, Tensor record)
    {
        if (record.dtype == ScalarType.Bool) return grad.masked_fill_(record, 0);
        using var flat = grad.view(-1);
        flat.index_fill_(0, record, 0);
        return grad;
    }

    /// <summary>The device kernels for t's memory; the CPU engine has none (unless the tests set HostKernels).</summary>
    internal static IFlipKernelLauncher KernelsFor(Tensor t) => DeviceKernels(t)
        ?? throw new InvalidOperationException($"no flip kernels run on {t.device} tensors");

    /// <summary>
    /// When set, CPU tensors on this thread take the device path with these kernels: how the tests run a whole layer
    /// through <see cref="DeviceFlip"/> (kernels emulated on the host) without a GPU.
    /// </summary>
    [ThreadStatic] internal static IFlipKernelLauncher? HostKernels;

    /// <summary>The kernel launcher for a CUDA tensor; null for a CPU one (the CPU engine).</summary>
    static IFlipKernelLauncher? DeviceKernels(Tensor t) => t.device_type switch
    {
        DeviceType.CPU => HostKernels,
        DeviceType.CUDA => CudaFlipLauncher.For(t.device_index),
        _ => throw new ArgumentException($"bitflip runs on CPU and CUDA tensors, not {t.device_type}"),
    };

    /// <summary>Shape equality through size(k): `shape` builds a managed array per call, which every Linear's flips paid.</summary>
    static bool SameShape(Tensor a, Tensor b)
    {
        long dims = a.dim();
        if (dims != b.dim()) return false;
        for (int k = 0; k < dims; k++)
            if (a.size(k) != b.size(k)) return false;
        return true;
    }

    /// <summary>How many threads a CPU kernel of bflora's may use: maxThreads, or libtorch's count when ≤ 0.</summary>
    internal static int Threads(int maxThreads) => maxThreads > 0 ? maxThreads : torch.get_num_threads();
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
