using TorchSharp;

namespace Bflora.Checkpoints;

/// <summary>The safetensors dtype names this project reads and writes, and their TorchSharp scalar types.</summary>
public static class SafetensorsDtype
{
    public const string BF16 = "BF16";
    public const string F16 = "F16";
    public const string F32 = "F32";

    public static IReadOnlyList<string> Supported { get; } = [BF16, F16, F32];

    public static bool TryParse(string name, out torch.ScalarType type)
    {
        switch (name)
        {
            case BF16: type = torch.ScalarType.BFloat16; return true;
            case F16: type = torch.ScalarType.Float16; return true;
            case F32: type = torch.ScalarType.Float32; return true;
            default: type = default; return false;
        }
    }

    public static string NameOf(torch.ScalarType type) => type switch
    {
        torch.ScalarType.BFloat16 => BF16,
        torch.ScalarType.Float16 => F16,
        torch.ScalarType.Float32 => F32,
        _ => throw new ArgumentException($"dtype {type} cannot be stored; supported: {string.Join(", ", Supported)}"),
    };

    public static int SizeOf(torch.ScalarType type) => type switch
    {
        torch.ScalarType.BFloat16 or torch.ScalarType.Float16 => 2,
        torch.ScalarType.Float32 => 4,
        _ => throw new ArgumentException($"dtype {type} is not a safetensors dtype this project supports"),
    };
}
