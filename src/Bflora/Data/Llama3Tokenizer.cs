using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace Bflora.Data;

/// <summary>
/// The Llama-3 tokenizer read from a Hugging Face <c>tokenizer.json</c>, run by Microsoft.ML.Tokenizers' tiktoken engine.
/// Llama-3's BPE was trained with tiktoken, so its merge order equals its id order: rank = id, and the bytes of a token
/// are its vocabulary key read back through GPT-2's byte-level alphabet. Tiktoken also looks a whole pre-token up before
/// merging, which is what <c>ignore_merges: true</c> asks for, so the 280k merge strings are not needed.
/// Text that spells a special token (e.g. "&lt;|end_of_text|&gt;") is encoded as plain text, as Meta's reference does by
/// default, so data cannot inject control tokens; special ids still decode to their names.
/// </summary>
public sealed class Llama3Tokenizer : ITokenizer
{
    public const string BosToken = "<|begin_of_text|>";
    public const string EosToken = "<|end_of_text|>";

    private readonly TiktokenTokenizer _inner;

    private Llama3Tokenizer(TiktokenTokenizer inner, int vocabSize, int bosId, int eosId)
    {
        _inner = inner;
        VocabSize = vocabSize;
        BosId = bosId;
        EosId = eosId;
    }

    public int VocabSize { get; }

    public int BosId { get; }

    public int EosId { get; }

    /// <summary>
    /// Reads a Hugging Face tokenizer.json of the Llama-3 kind (byte-level BPE, a Split pre-tokenizer). A file that is
    /// not one (broken JSON, a field missing or of the wrong kind, ids out of range) is one <see cref="BfloraInputException"/>
    /// naming it.
    /// </summary>
    public static Llama3Tokenizer Load(string tokenizerJsonPath)
    {
        if (!File.Exists(tokenizerJsonPath))
            throw new FileNotFoundException($"tokenizer file not found: {tokenizerJsonPath}", tokenizerJsonPath);
        try
        {
            return Parse(tokenizerJsonPath);
        }
        // What JsonElement's typed getters throw on a missing field or a value of the wrong kind, and what the regex
        // and rank parsers throw on text that is not theirs.
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException
                                       or ArgumentException or OverflowException)
        {
            throw new BfloraInputException($"{tokenizerJsonPath} is not a usable Llama-3 tokenizer.json: {e.Message}", e);
        }
    }

    private static Llama3Tokenizer Parse(string tokenizerJsonPath)
    {
        using var stream = File.OpenRead(tokenizerJsonPath);
        using var json = JsonDocument.Parse(stream);
        var root = json.RootElement;
        var model = root.GetProperty("model");
        if (model.GetProperty("type").GetString() != "BPE")
            throw new BfloraInputException($"{tokenizerJsonPath}: model.type must be BPE");

        var ranks = new StringBuilder(4 << 20);
        int maxId = -1;
        var singleBytes = new bool[256];
        foreach (var entry in model.GetProperty("vocab").EnumerateObject())
        {
            int id = Id(entry.Value, tokenizerJsonPath);
            byte[] bytes = ByteLevelAlphabet.ToBytes(entry.Name);
            if (bytes.Length == 1) singleBytes[bytes[0]] = true;
            ranks.Append(Convert.ToBase64String(bytes)).Append(' ').Append(id).Append('\n');
            maxId = Math.Max(maxId, id);
        }
        // Byte-level BPE spells any text from single bytes up; without one of them some text has no encoding at all.
        if (Array.IndexOf(singleBytes, false) is var missing and >= 0)
            throw new BfloraInputException($"{tokenizerJsonPath}: model.vocab has no token for the byte 0x{missing:X2}");

        var special = new Dictionary<string, int>();
        if (root.TryGetProperty("added_tokens", out var added))
        {
            foreach (var token in added.EnumerateArray())
            {
                int id = Id(token.GetProperty("id"), tokenizerJsonPath);
                special[token.GetProperty("content").GetString()
                        ?? throw new BfloraInputException($"{tokenizerJsonPath}: an added token's content is null")] = id;
                maxId = Math.Max(maxId, id);
            }
        }
        int bos = RequireSpecial(special, BosToken, tokenizerJsonPath);
        int eos = RequireSpecial(special, EosToken, tokenizerJsonPath);

        // No special tokens in the pre-tokenizer: that is what keeps special-token text in documents plain text.
        var splitter = new SplitPreTokenizer(
            new Regex(SplitPattern(root, tokenizerJsonPath), RegexOptions.Compiled | RegexOptions.CultureInvariant,
                      PatternTimeLimit),
            tokenizerJsonPath);
        using var rankStream = new MemoryStream(Encoding.ASCII.GetBytes(ranks.ToString()));
        var inner = TiktokenTokenizer.Create(rankStream, splitter, normalizer: null, specialTokens: special);
        return new Llama3Tokenizer(inner, maxId + 1, bos, eos);
    }

    /// <summary>Thousands of times what the real pattern needs on the longest document.</summary>
    private static readonly TimeSpan PatternTimeLimit = TimeSpan.FromSeconds(10);

    /// <summary>A token id: the model's embedding gets one row per id up to the largest, so it must be sane.</summary>
    private static int Id(JsonElement value, string path)
    {
        int id = value.GetInt32();
        return id is >= 0 and < MaxVocabulary
            ? id
            : throw new BfloraInputException($"{path}: token id {id} is outside 0..{MaxVocabulary - 1}");
    }

    /// <summary>Far above any Llama vocabulary (128,256), far below what would make the embedding's size overflow.</summary>
    private const int MaxVocabulary = 1 << 24;

    public IReadOnlyList<int> Encode(string text) =>
        _inner.EncodeToIds(text, considerPreTokenization: true, considerNormalization: false);

    public string Decode(IEnumerable<int> ids) => _inner.Decode(ids);

    private static int RequireSpecial(Dictionary<string, int> special, string content, string path) =>
        special.TryGetValue(content, out int id)
            ? id
            : throw new BfloraInputException($"{path}: added_tokens has no {content}");

    /// <summary>The regex of the file's Split pre-tokenizer (alone or inside a Sequence).</summary>
    private static string SplitPattern(JsonElement root, string path)
    {
        if (root.TryGetProperty("pre_tokenizer", out var pre) && pre.ValueKind == JsonValueKind.Object)
        {
            var steps = pre.TryGetProperty("pretokenizers", out var list) ? list.EnumerateArray().ToList() : [pre];
            foreach (var step in steps)
            {
                if (step.GetProperty("type").GetString() != "Split"
                    || !step.GetProperty("pattern").TryGetProperty("Regex", out var regex))
                    continue;
                // SplitPreTokenizer keeps matches and the text between them apart: the "Isolated" behaviour only.
                string behavior = step.TryGetProperty("behavior", out var b) ? b.GetString() ?? "" : "Isolated";
                bool invert = step.TryGetProperty("invert", out var inv) && inv.GetBoolean();
                if (behavior != "Isolated" || invert)
                    throw new BfloraInputException(
                        $"{path}: the Split pre-tokenizer is behavior \"{behavior}\", invert {invert.ToString().ToLowerInvariant()}; bflora reads only \"Isolated\", not inverted (as Llama-3's)");
                return regex.GetString()!;
            }
        }
        throw new BfloraInputException($"{path}: pre_tokenizer has no Split regex (not a Llama-3 style tokenizer.json)");
    }
}
