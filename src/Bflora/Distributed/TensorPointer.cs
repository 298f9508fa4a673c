using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace Bflora.Distributed;

/// <summary>The address of a CPU tensor's first element (storage offset included); TorchSharp keeps its own binding internal.</summary>
internal static unsafe class TensorPointer
{
    [DllImport("LibTorchSharp")]
    private static extern IntPtr THSTensor_data(IntPtr tensorHandle);

    public static void* Of(Tensor t) => (void*)THSTensor_data(t.Handle);
}
