using System.Text.RegularExpressions;
using Bflora.Data;
using Xunit;

namespace Bflora.Tests.Data;

public sealed class SplitPreTokenizerTests
{
    private static List<string> Pieces(string pattern, string text, TimeSpan? limit = null)
    {
        var splitter = new SplitPreTokenizer(new Regex(pattern, RegexOptions.None, limit ?? TimeSpan.FromSeconds(10)), "test.json");
        return splitter.PreTokenize(text).Select(p => text.Substring(p.Offset, p.Length)).ToList();
    }

    [Fact]
    public void Text_between_matches_is_its_own_piece_and_nothing_is_dropped()
    {
        Assert.Equal(["ab", "--", "cd", "!"], Pieces("[a-z]+", "ab--cd!"));
        Assert.Equal(["--", "ab"], Pieces("[a-z]+", "--ab"));
    }

    [Fact]
    public void A_pattern_that_can_match_nothing_splits_instead_of_stalling()
    {
        Assert.Equal(["ab", " ", "c"], Pieces("[a-z]+|", "ab c"));
        Assert.Equal(["x"], Pieces("(?=x)", "x"));
    }

    [Fact]
    public void The_span_and_string_forms_agree()
    {
        const string text = "It's 2024, wörld!\n\n  ok";
        var splitter = new SplitPreTokenizer(new Regex(@"\p{L}+|\p{N}{1,3}|\s+"), "test.json");
        Assert.Equal(splitter.PreTokenize(text), splitter.PreTokenize(text.AsSpan()));
    }

    [Fact]
    public void A_pattern_that_backtracks_without_end_is_one_input_error()
    {
        var e = Assert.Throws<BfloraInputException>(() =>
            Pieces("(x+x+)+y", new string('x', 40), TimeSpan.FromMilliseconds(50)));
        Assert.StartsWith("test.json: the pre_tokenizer's Split regex ran over", e.Message);
    }
}
