namespace Bflora.Data;

/// <summary>Text ↔ token ids. <see cref="Encode"/> never adds BOS or EOS; the windowing adds BOS per document.</summary>
public interface ITokenizer
{
    /// <summary>Number of ids the model's embedding must cover (highest id + 1).</summary>
    int VocabSize { get; }

    int BosId { get; }

    int EosId { get; }

    IReadOnlyList<int> Encode(string text);

    string Decode(IEnumerable<int> ids);
}
