using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Serialization;

namespace Bflora.Data;

/// <summary>
/// What a run's data position is a position in: the dataset's files (count, bytes, and a digest of their relative
/// names and sizes, so a moved copy of the same files still matches), the text field, the tokenizer and the window
/// length. Kept in checkpoints so a resume can tell that the data under the same path changed.
/// </summary>
public sealed record DataIdentity(
    [property: JsonPropertyName("path")] string Path,
    [property: JsonPropertyName("files")] int Files,
    [property: JsonPropertyName("bytes")] long Bytes,
    [property: JsonPropertyName("digest")] string Digest,
    [property: JsonPropertyName("text_field")] string TextField,
    [property: JsonPropertyName("tokenizer")] string Tokenizer,
    [property: JsonPropertyName("seq_len")] int SeqLen)
{
    /// <param name="tokenizerKind">The config's [model] tokenizer; with the vocabulary size it names the ids a cursor holds.</param>
    public static DataIdentity Of(TextSource source, string tokenizerKind, ITokenizer tokenizer, int seqLen)
    {
        bool folder = Directory.Exists(source.DataPath);
        var listing = new StringBuilder();
        long bytes = 0;
        foreach (string file in source.Files)
        {
            long size = new FileInfo(file).Length;
            bytes += size;
            string name = folder ? System.IO.Path.GetRelativePath(source.DataPath, file) : System.IO.Path.GetFileName(file);
            listing.Append(name).Append('\0').Append(size).Append('\n');
        }
        string digest = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(listing.ToString())))[..16];
        return new DataIdentity(System.IO.Path.GetFullPath(source.DataPath), source.Files.Count, bytes, digest,
            source.TextField, $"{tokenizerKind} ({tokenizer.VocabSize} ids)", seqLen);
    }

    /// <summary>What a null field makes of a parsed identity: unusable (JSON cannot say "required").</summary>
    [JsonIgnore]
    public bool Complete => Path is not null && Digest is not null && TextField is not null && Tokenizer is not null
                            && Files >= 0 && Bytes >= 0 && SeqLen > 0;

    /// <summary>
    /// How <paramref name="now"/> differs from this saved identity in what a data position depends on, one phrase
    /// each ("files: 3 → 4"); a different path alone is not a difference.
    /// </summary>
    public IReadOnlyList<string> DifferencesTo(DataIdentity now)
    {
        var differences = new List<string>();
        if (Digest != now.Digest)
            differences.Add(Files == now.Files && Bytes == now.Bytes
                ? "the files' names or sizes"
                : $"files: {Files} of {Bytes:N0} bytes → {now.Files} of {now.Bytes:N0} bytes");
        if (TextField != now.TextField) differences.Add($"text_field: \"{TextField}\" → \"{now.TextField}\"");
        if (SeqLen != now.SeqLen) differences.Add($"seq_len: {SeqLen} → {now.SeqLen}");
        return differences;
    }
}
