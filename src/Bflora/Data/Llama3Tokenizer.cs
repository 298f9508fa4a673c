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

    public static Llama3Tokenizer Load(string tokenizerJsonPath)
    {
        if (!File.Exists(tokenizerJsonPath))
            throw new FileNotFoundException($"tokenizer file not found: {tokenizerJsonPath}", tokenizerJsonPath);
        using var stream = File.OpenRead(tokenizerJsonPath);
        using var json = JsonDocument.Parse(stream);
        var root = json.RootElement;
        var model = root.GetProperty("model");
        if (model.GetProperty("type").GetString() != "BPE")
            throw new FormatException($"{tokenizerJsonPath}: model.type must be BPE");

        var ranks = new StringBuilder(4 << 20);
        int maxId = -1;
        foreach (var entry in model.GetProperty("vocab").EnumerateObject())
        {
            int id = entry.Value.GetInt32();
            ranks.Append(Convert.ToBase64String(ByteLevelAlphabet.ToBytes(entry.Name))).Append(' ').Append(id).Append('\n');
            maxId = Math.Max(maxId, id);
        }

        var special = new Dictionary<string, int>();
        if (root.TryGetProperty("added_tokens", out var added))
        {
            foreach (var token in added.EnumerateArray())
            {
                int id = token.GetProperty("id").GetInt32();
                special[token.GetProperty("content").GetString()!] = id;
                maxId = Math.Max(maxId, id);
            }
        }
        int bos = RequireSpecial(special, BosToken, tokenizerJsonPath);
        int eos = RequireSpecial(special, EosToken, tokenizerJsonPath);

        // No special tokens in the pre-tokenizer: that is what keeps special-token text in documents plain text.
        var splitter = new RegexPreTokenizer(
            new Regex(SplitPattern(root, tokenizerJsonPath), RegexOptions.Compiled | RegexOptions.CultureInvariant),
            specialTokens: null);
        using var rankStream = new MemoryStream(Encoding.ASCII.GetBytes(ranks.ToString()));
        var inner = TiktokenTokenizer.Create(rankStream, splitter, normalizer: null, specialTokens: special);
        return new Llama3Tokenizer(inner, maxId + 1, bos, eos);
    }

    public IReadOnlyList<int> Encode(string text) =>
        _inner.EncodeToIds(text, considerPreTokenization: true, considerNormalization: false);

    public string Decode(IEnumerable<int> ids) => _inner.Decode(ids);

    private static int RequireSpecial(Dictionary<string, int> special, string content, string path) =>
        special.TryGetValue(content, out int id)
            ? id
            : throw new FormatException($"{path}: added_tokens has no {content}");

    /// <summary>The regex of the file's Split pre-tokenizer (alone or inside a Sequence).</summary>
    private static string SplitPattern(JsonElement root, string path)
    {
        if (root.TryGetProperty("pre_tokenizer", out var pre) && pre.ValueKind == JsonValueKind.Object)
        {
            var steps = pre.TryGetProperty("pretokenizers", out var list) ? list.EnumerateArray().ToList() : [pre];
            foreach (var step in steps)
            {
                if (step.GetProperty("type").GetString() == "Split"
                    && step.GetProperty("pattern").TryGetProperty("Regex", out var regex))
                    return regex.GetString()!;
            }
        }
        throw new FormatException($"{path}: pre_tokenizer has no Split regex (not a Llama-3 style tokenizer.json)");
    }
}
