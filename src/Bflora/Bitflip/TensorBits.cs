using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace Bflora.Bitflip;

/// <summary>Raw access to a tensor's storage words.</summary>
public static unsafe class TensorBits
{
    // TorchSharp keeps its own binding internal; the native export is stable.
    [DllImport("LibTorchSharp")]
    static extern IntPtr THSTensor_data(IntPtr tensorHandle);

    /// <summary>Address of the first element (storage offset included). The tensor must be on the CPU.</summary>
    public static void* Pointer(Tensor t)
    {
        if (t.device_type != DeviceType.CPU) throw new ArgumentException("bitflip kernels run on CPU tensors");
        return (void*)Address(t);
    }

    /// <summary>Address of the first element on the tensor's own device (a device pointer for CUDA tensors).</summary>
    public static ulong Address(Tensor t) => (ulong)THSTensor_data(t.Handle);

    /// <summary>The storage words of a tensor in flat row-major order, each widened to u32.</summary>
    public static uint[] ReadWords(Tensor t)
    {
        var fmt = FlipFormats.Of(t.dtype);
        using var c = t.contiguous();
        long n = c.numel();
        var words = new uint[n];
        void* p = Pointer(c);
        if (FlipFormats.WordBits(fmt) == 16)
            for (long i = 0; i < n; i++) words[i] = ((ushort*)p)[i];
        else
            for (long i = 0; i < n; i++) words[i] = ((uint*)p)[i];
        return words;
    }

    /// <summary>A new tensor of the given shape and format holding the given words.</summary>
    public static Tensor FromWords(uint[] words, long[] shape, FlipFormat fmt)
    {
        var t = torch.empty(shape, FlipFormats.ScalarType(fmt));
        if (t.numel() != words.LongLength) throw new ArgumentException("word count does not match the shape");
        void* p = Pointer(t);
        if (FlipFormats.WordBits(fmt) == 16)
            for (long i = 0; i < words.LongLength; i++) ((ushort*)p)[i] = (ushort)words[i];
        else
            for (long i = 0; i < words.LongLength; i++) ((uint*)p)[i] = words[i];
        return t;
    }
}
