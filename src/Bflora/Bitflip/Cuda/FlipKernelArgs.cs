using System.Runtime.InteropServices;

namespace Bflora.Bitflip.Cuda;

/// <summary>The device kernels of flip_kernels.cu; LoraCorrection takes <see cref="LoraCorrectionArgs"/>, the others <see cref="FlipKernelArgs"/>.</summary>
public enum FlipKernel { Fast, Philox, ZeroOut, LoraCorrection }

/// <summary>
/// The one argument every kernel of flip_kernels.cu takes, by value: the layout must stay field for field that of
/// its struct FlipArgs (8-byte fields first, so C and .NET pad it alike).
/// </summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct FlipKernelArgs
{
    public ulong Src, Dst;
    /// <summary>Where the zero-out records its drops (one byte per element, 1 = dropped); 0 records nothing.</summary>
    public ulong Marks;
    public long Count, Offset;
    public fixed double PerLogKeep[2];
    public fixed uint Mask[2];
    public fixed int Halves[2];
    public fixed int Seed[2];
    public uint FirstDropped;
    public int ZeroOut, Wide, Components;

    /// <summary>
    /// The arguments of one flip of count elements at global index offset: active components first (exp, then
    /// frac), the zero-out's first dropped pattern, and the fast generator's 1 / ln(1 − p) computed here, in .NET,
    /// so the device divides nothing the reference does not.
    /// </summary>
    public static FlipKernelArgs For(ulong src, ulong dst, long count, long offset, FlipFormat fmt, FlipOp op)
    {
        var a = new FlipKernelArgs { Src = src, Dst = dst, Count = count, Offset = offset };
        a.Wide = FlipFormats.WordBits(fmt) == 32 ? 1 : 0;
        if (op.ZeroOutThreshold is float t)
        {
            a.ZeroOut = 1;
            a.FirstDropped = Bitflip.ZeroOut.FirstDroppedBits(fmt, t);
        }
        int c = 0;
        foreach (var (halves, seed, mask) in new[] { (op.ExpHalves, op.SeedExp, FlipFormats.ExpMask(fmt)),
                     (op.FracHalves, op.SeedFrac, FlipFormats.FracMask(fmt)) })
        {
            if (halves is not int n) continue;
            a.Mask[c] = mask;
            a.Halves[c] = n;
            a.Seed[c] = seed;
            a.PerLogKeep[c] = n == 0 ? 0 : 1.0 / FastMaskStream.LogKeep(n);
            c++;
        }
        a.Components = c;
        return a;
    }

    /// <summary>Fixed blocks of the fast generator that the elements touch.</summary>
    public readonly long FastBlocks => Count == 0 ? 0
        : ((Offset + Count - 1) >> FastMaskStream.BlockShift) - (Offset >> FastMaskStream.BlockShift) + 1;
}

/// <summary>
/// The argument of flip_kernels.cu's bflora_lora_correct, by value: field for field its struct CorrectArgs. Addresses
/// of contiguous tensors; the gradients are float32 and corrected in place.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
public struct LoraCorrectionArgs
{
    public ulong Marks, G, X, A, B, GradA, GradB;
    public long Tokens, OutFeatures, InFeatures;
    public float MinusScaling;
    public int Rank, Format, Chunk, Chunks;

    /// <summary>Elements whose marks one thread scans (the kernel's BFLORA_MARK_GROUP).</summary>
    public const int MarkGroup = 64;

    /// <summary>Tokens one thread sums per drop: enough to outweigh its scan of the marks, few enough to spread a drop's work.</summary>
    public const int TokensPerThread = 64;

    /// <summary>The layer's element format as the kernel reads it: 0 = bf16, 1 = fp32, 2 = fp16.</summary>
    public static int FormatOf(FlipFormat fmt) => fmt switch
    {
        FlipFormat.BFloat16 => 0,
        FlipFormat.Float32 => 1,
        FlipFormat.Float16 => 2,
        _ => throw new ArgumentOutOfRangeException(nameof(fmt)),
    };

    /// <summary>Logical threads of one launch: a thread per (group of marks, chunk of tokens).</summary>
    public readonly long Threads => (OutFeatures * InFeatures + MarkGroup - 1) / MarkGroup * Chunks;
}

/// <summary>Runs one kernel of flip_kernels.cu over at least the given number of logical threads (grid-stride).</summary>
public interface IFlipKernelLauncher
{
    void Launch<TArgs>(FlipKernel kernel, in TArgs args, long threads) where TArgs : unmanaged;
}
