using TorchSharp;

namespace Bflora.Bitflip;

/// <summary>The floating-point storage formats the flip understands, and their bit masks.</summary>
public enum FlipFormat { BFloat16, Float16, Float32 }

public static class FlipFormats
{
    /// <summary>Sign and exponent bits: the sign counts as "exp", as in the original kernel.</summary>
    public static uint ExpMask(FlipFormat f) => f switch
    {
        FlipFormat.BFloat16 => 0xFF80u,
        FlipFormat.Float16 => 0xFC00u,
        FlipFormat.Float32 => 0xFF800000u,
        _ => throw new ArgumentOutOfRangeException(nameof(f)),
    };

    public static uint FracMask(FlipFormat f) => f switch
    {
        FlipFormat.BFloat16 => 0x007Fu,
        FlipFormat.Float16 => 0x03FFu,
        FlipFormat.Float32 => 0x007FFFFFu,
        _ => throw new ArgumentOutOfRangeException(nameof(f)),
    };

    public static int WordBits(FlipFormat f) => f == FlipFormat.Float32 ? 32 : 16;

    public static FlipFormat Of(torch.ScalarType t) => t switch
    {
        torch.ScalarType.BFloat16 => FlipFormat.BFloat16,
        torch.ScalarType.Float16 => FlipFormat.Float16,
        torch.ScalarType.Float32 => FlipFormat.Float32,
        _ => throw new ArgumentException($"bitflip supports bfloat16, float16 and float32, not {t}"),
    };

    public static torch.ScalarType ScalarType(FlipFormat f) => f switch
    {
        FlipFormat.BFloat16 => torch.ScalarType.BFloat16,
        FlipFormat.Float16 => torch.ScalarType.Float16,
        _ => torch.ScalarType.Float32,
    };

    /// <summary>The word's value widened exactly to fp32 (the precision the zero-out compares in).</summary>
    public static float ToSingle(FlipFormat f, uint word) => f switch
    {
        FlipFormat.BFloat16 => BitConverter.Int32BitsToSingle((int)(word << 16)),
        FlipFormat.Float16 => (float)BitConverter.UInt16BitsToHalf((ushort)word),
        _ => BitConverter.Int32BitsToSingle((int)word),
    };
}
