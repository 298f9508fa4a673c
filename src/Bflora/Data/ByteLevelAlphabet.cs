namespace Bflora.Data;

/// <summary>
/// GPT-2's byte-level alphabet: HF BPE vocabularies spell every byte as a printable character so that keys are valid
/// strings. Bytes that are already printable Latin-1 (33..126, 161..172, 174..255) stand for themselves; the other 68
/// bytes are given the code points 256, 257, … in byte order. Llama-3's tokenizer.json keys use this spelling.
/// </summary>
internal static class ByteLevelAlphabet
{
    private static readonly Dictionary<char, byte> ByteOfChar = Build();

    private static Dictionary<char, byte> Build()
    {
        var map = new Dictionary<char, byte>(256);
        int next = 256;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= 33 and <= 126 or >= 161 and <= 172 or >= 174 and <= 255;
            map[(char)(printable ? b : next++)] = (byte)b;
        }
        return map;
    }

    /// <summary>The raw bytes a vocabulary key stands for.</summary>
    public static byte[] ToBytes(string key)
    {
        var bytes = new byte[key.Length];
        for (int i = 0; i < key.Length; i++)
        {
            if (!ByteOfChar.TryGetValue(key[i], out bytes[i]))
                throw new FormatException($"vocabulary key '{key}' has a character outside the byte-level alphabet");
        }
        return bytes;
    }
}
