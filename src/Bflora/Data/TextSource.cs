using System.Text;
using System.Text.Json;

namespace Bflora.Data;

/// <summary>One piece of one document, in reading order. Piece 0 of every document is where its BOS goes.</summary>
public readonly record struct DocumentChunk(long Document, int Chunk, string Text);

/// <summary>
/// The documents of a dataset path, read lazily and always in the same order:
/// a <c>.txt</c> file is one document; a <c>.jsonl</c> file holds one document per non-blank line (string field
/// <see cref="TextField"/>); a <c>.parquet</c> file holds one document per row (string column <see cref="TextField"/>);
/// a folder holds its <c>.txt</c>/<c>.jsonl</c>/<c>.parquet</c> files, recursively, in ordinal order of their relative
/// paths. Other files in a folder (README.md, LICENSE) are ignored.
/// Long documents come in pieces of about <see cref="ChunkChars"/> characters (see <see cref="SafeChunker"/>).
/// </summary>
public sealed class TextSource
{
    public const int DefaultChunkChars = 1 << 20;

    private static readonly string[] ReadableExtensions = [".txt", ".jsonl", ".parquet"];

    public TextSource(string path, string textField = "text", int chunkChars = DefaultChunkChars)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(chunkChars, 16);
        DataPath = path;
        TextField = textField;
        ChunkChars = chunkChars;
        Files = ListFiles(path);
    }

    public string DataPath { get; }

    public string TextField { get; }

    public int ChunkChars { get; }

    /// <summary>The files read, in reading order.</summary>
    public IReadOnlyList<string> Files { get; }

    /// <summary>
    /// All pieces from document <paramref name="startDocument"/>, piece <paramref name="startChunk"/> on. Skipped
    /// documents are counted, not parsed, so resuming deep into a dataset costs a read, not a tokenization.
    /// </summary>
    public IEnumerable<DocumentChunk> Chunks(long startDocument = 0, int startChunk = 0)
    {
        long document = 0;
        foreach (string file in Files)
        {
            foreach (var pieces in Documents(file, skip: Math.Max(0, startDocument - document)))
            {
                long index = document++;
                if (index < startDocument)
                    continue;
                int chunk = 0;
                foreach (string text in pieces)
                {
                    if (index > startDocument || chunk >= startChunk)
                        yield return new DocumentChunk(index, chunk, text);
                    chunk++;
                }
            }
        }
        if (document == 0)
            throw new InvalidDataException($"dataset {DataPath} has no documents (empty .jsonl or .parquet files only?)");
    }

    /// <summary>The documents of one file; the first <paramref name="skip"/> are counted but not read or parsed.</summary>
    private IEnumerable<IEnumerable<string>> Documents(string file, long skip)
    {
        if (file.EndsWith(".txt", StringComparison.OrdinalIgnoreCase))
        {
            yield return skip > 0 ? [] : TxtPieces(file);
            yield break;
        }
        if (file.EndsWith(".parquet", StringComparison.OrdinalIgnoreCase))
        {
            foreach (string? text in ParquetText.Rows(file, TextField, skip))
                yield return text is null ? [] : SafeChunker.Split(new StringReader(text), ChunkChars);
            yield break;
        }
        int lineNumber = 0;
        using var lines = File.ReadLines(file, StrictUtf8).GetEnumerator();
        while (Next(lines, file))
        {
            string line = lines.Current;
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line))
                continue;
            if (skip > 0)
            {
                skip--;
                yield return [];
                continue;
            }
            yield return SafeChunker.Split(new StringReader(JsonlText(file, lineNumber, line)), ChunkChars);
        }
    }

    private IEnumerable<string> TxtPieces(string file)
    {
        using var reader = new StreamReader(file, StrictUtf8, detectEncodingFromByteOrderMarks: true);
        using var pieces = SafeChunker.Split(reader, ChunkChars).GetEnumerator();
        while (Next(pieces, file))
            yield return pieces.Current;
    }

    /// <summary>
    /// Text files are read as UTF-8 (or as their byte-order mark says) and bytes that are not are an error, as in
    /// Hugging Face datasets: read as U+FFFD instead, a Latin-1 corpus would train on replacement characters without a word.
    /// </summary>
    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>The next line or piece; the reader decodes a buffer ahead, so a bad byte cannot be placed more closely than the file.</summary>
    private static bool Next<T>(IEnumerator<T> items, string file)
    {
        try
        {
            return items.MoveNext();
        }
        catch (DecoderFallbackException)
        {
            throw new InvalidDataException(
                $"{file}: not valid UTF-8 text (convert it first, e.g. iconv -f latin1 -t utf-8)");
        }
    }

    private string JsonlText(string file, int lineNumber, string line)
    {
        JsonDocument json;
        try
        {
            json = JsonDocument.Parse(line);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{file} line {lineNumber}: not valid JSON ({e.Message})", e);
        }
        using (json)
        {
            // Names and strings are unescaped only when read, and the one escape JSON allows that no string can
            // hold, half a surrogate pair alone, surfaces only there.
            try
            {
                if (json.RootElement.ValueKind != JsonValueKind.Object
                    || !json.RootElement.TryGetProperty(TextField, out var field))
                    throw new InvalidDataException($"{file} line {lineNumber}: no field '{TextField}' (set [data] text_field)");
                if (field.ValueKind != JsonValueKind.String)
                    throw new InvalidDataException($"{file} line {lineNumber}: field '{TextField}' is {field.ValueKind}, not a string");
                return field.GetString()!;
            }
            catch (InvalidOperationException)
            {
                throw new InvalidDataException($"{file} line {lineNumber}: an unpaired \\u surrogate escape, which is no text");
            }
        }
    }

    private static IReadOnlyList<string> ListFiles(string path)
    {
        if (File.Exists(path))
        {
            string ext = Path.GetExtension(path).ToLowerInvariant();
            if (!ReadableExtensions.Contains(ext))
                throw new BfloraInputException($"data file {path}: extension '{ext}' is not supported (use .txt, .jsonl or .parquet)");
            return [path];
        }
        if (!Directory.Exists(path))
            throw new FileNotFoundException($"data path not found: {path}", path);

        var files = Directory.EnumerateFiles(path, "*", SearchOption.AllDirectories)
            .Where(f => ReadableExtensions.Contains(Path.GetExtension(f).ToLowerInvariant()))
            .OrderBy(f => Path.GetRelativePath(path, f), StringComparer.Ordinal)
            .ToList();
        if (files.Count == 0)
            throw new InvalidDataException($"data folder {path} has no .txt, .jsonl or .parquet files");
        return files;
    }
}
