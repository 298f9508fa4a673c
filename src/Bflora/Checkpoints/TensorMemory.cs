using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using TorchSharp;
using static TorchSharp.torch;

namespace Bflora.Checkpoints;

/// <summary>
/// Moves bytes between a file and the memory of a contiguous CPU tensor without a managed copy of the tensor.
/// </summary>
internal static unsafe class TensorMemory
{
    // Span lengths are int; 1 GiB chunks keep every span well inside that.
    private const int ChunkBytes = 1 << 30;

    /// <summary>True when the tensor's bytes can be the direct target or source of file I/O.</summary>
    public static bool IsDirect(Tensor t) => t.device_type == DeviceType.CPU && t.is_contiguous();

    public static long ByteLength(Tensor t) => t.numel() * t.element_size();

    /// <summary>Fills all of <paramref name="target"/> from the file at <paramref name="fileOffset"/>.</summary>
    public static void ReadInto(SafeFileHandle file, string path, long fileOffset, Tensor target)
    {
        long length = ByteLength(target);
        if (length == 0) return;
        byte* dst = (byte*)Bitflip.TensorBits.Pointer(target);
        long done = 0;
        while (done < length)
        {
            int want = (int)Math.Min(ChunkBytes, length - done);
            int got = RandomAccess.Read(file, new Span<byte>(dst + done, want), fileOffset + done);
            if (got == 0)
                throw new CheckpointFormatException(path, $"unexpected end of file at byte {fileOffset + done}");
            done += got;
        }
    }

    /// <summary>Appends all bytes of <paramref name="source"/> to <paramref name="stream"/>.</summary>
    public static void WriteTo(Stream stream, Tensor source)
    {
        long length = ByteLength(source);
        if (length == 0) return;
        byte* src = (byte*)Bitflip.TensorBits.Pointer(source);
        for (long done = 0; done < length; done += ChunkBytes)
        {
            int count = (int)Math.Min(ChunkBytes, length - done);
            stream.Write(new ReadOnlySpan<byte>(src + done, count));
        }
    }
}
