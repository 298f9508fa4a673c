using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace Bflora.Data;

/// <summary>
/// The <c>Split</c> pre-tokenizer of a tokenizer.json with <c>behavior: "Isolated"</c>: every match of the pattern is a
/// piece, and so is every stretch of text between matches, so no text is ever dropped. Empty matches are skipped, which
/// keeps a pattern that can match nothing (an empty alternative) from stalling the split; a pattern that backtracks
/// without end is stopped by the regex's time limit and reported as bad input.
/// </summary>
public sealed class SplitPreTokenizer : PreTokenizer
{
    private readonly Regex _pattern;
    private readonly string _source;

    /// <param name="source">Where the pattern came from, for the message when it runs away.</param>
    public SplitPreTokenizer(Regex pattern, string source)
    {
        _pattern = pattern;
        _source = source;
    }

    public override IEnumerable<(int Offset, int Length)> PreTokenize(string text) =>
        text is null ? [] : PreTokenize(text.AsSpan());

    public override IEnumerable<(int Offset, int Length)> PreTokenize(ReadOnlySpan<char> text)
    {
        // Llama-3 text averages about 4 characters a piece: growing the list from empty took a third of the split's time.
        var pieces = new List<(int Offset, int Length)>(text.Length / 3 + 1);
        int end = 0;
        try
        {
            foreach (var match in _pattern.EnumerateMatches(text))
            {
                if (match.Length == 0) continue;
                if (match.Index > end) pieces.Add((end, match.Index - end));
                pieces.Add((match.Index, match.Length));
                end = match.Index + match.Length;
            }
        }
        catch (RegexMatchTimeoutException)
        {
            throw new BfloraInputException(
                $"{_source}: the pre_tokenizer's Split regex ran over {_pattern.MatchTimeout.TotalSeconds:0.###} s on one text (a pattern that backtracks without end)");
        }
        if (text.Length > end) pieces.Add((end, text.Length - end));
        return pieces;
    }
}
