using System.Text;

namespace Bflora.Data;

/// <summary>
/// One id per UTF-8 byte (0..255), BOS = 256, EOS = 257. Needs no files, so the demo and the tests can train a tiny
/// model from scratch on any text. Decoding drops BOS/EOS and replaces invalid UTF-8 the way <see cref="Encoding.UTF8"/> does.
/// </summary>
public sealed class ByteTokenizer : ITokenizer
{
    public int VocabSize => 258;

    public int BosId => 256;

    public int EosId => 257;

    public IReadOnlyList<int> Encode(string text)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        var ids = new int[bytes.Length];
        for (int i = 0; i < bytes.Length; i++)
            ids[i] = bytes[i];
        return ids;
    }

    public string Decode(IEnumerable<int> ids)
    {
        var bytes = new List<byte>();
        foreach (int id in ids)
        {
            if (id is < 0 or >= 258)
                throw new ArgumentOutOfRangeException(nameof(ids), $"byte tokenizer id {id} is outside 0..257");
            if (id < 256)
                bytes.Add((byte)id);
        }
        return Encoding.UTF8.GetString(bytes.ToArray());
    }
}
