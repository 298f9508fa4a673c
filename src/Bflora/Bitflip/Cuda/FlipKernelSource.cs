using System.Globalization;
using System.Text;

namespace Bflora.Bitflip.Cuda;

/// <summary>The text of flip_kernels.cu, with the fast generator's ln table prepended as exact hex literals.</summary>
public static class FlipKernelSource
{
    static readonly Lazy<string> s_text = new(Build);

    public static string Text => s_text.Value;

    static string Build()
    {
        using var stream = typeof(FlipKernelSource).Assembly.GetManifestResourceStream("Bflora.Bitflip.Cuda.flip_kernels.cu")
            ?? throw new InvalidOperationException("flip_kernels.cu is not embedded in the assembly");
        using var reader = new StreamReader(stream);
        var table = string.Join(", ", FastMaskStream.LnOf64ths.Select(HexLiteral));
        return new StringBuilder()
            .Append("__constant__ double BFLORA_LN_64THS[").Append(FastMaskStream.LnOf64ths.Length).Append("] = { ")
            .Append(table).AppendLine(" };")
            .Append(reader.ReadToEnd())
            .ToString();
    }

    /// <summary>A finite double as a C hexadecimal floating literal (0x1.hhhhp±e), which every compiler reads exactly.</summary>
    public static string HexLiteral(double d)
    {
        if (!double.IsFinite(d)) throw new ArgumentException("only finite values have a literal", nameof(d));
        long bits = BitConverter.DoubleToInt64Bits(d);
        string sign = bits < 0 ? "-" : "";
        int exponent = (int)((bits >> 52) & 0x7FF);
        long fraction = bits & 0xFFFFFFFFFFFFFL;
        if (exponent == 0 && fraction == 0) return sign + "0x0p+0";
        // Subnormals are 0x0.f·2^-1022; normals 0x1.f·2^(e−1023).
        string lead = exponent == 0 ? "0" : "1";
        int power = exponent == 0 ? -1022 : exponent - 1023;
        return string.Create(CultureInfo.InvariantCulture, $"{sign}0x{lead}.{fraction:x13}p{power:+0;-0}");
    }
}
