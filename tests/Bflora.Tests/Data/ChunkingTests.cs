using Bflora.Data;
using Xunit;

namespace Bflora.Tests.Data;

/// <summary>Long documents are tokenized piece by piece; the pieces must give exactly the whole document's ids.</summary>
public sealed class ChunkingTests(Llama3Fixture fixture) : IClassFixture<Llama3Fixture>
{
    [Theory]
    [InlineData("austen_persuasion.txt", 4096)]
    [InlineData("melville_mobydick.txt", 1000)]
    public void PiecewiseLlama3IdsEqualWholeDocumentIds(string file, int chunkChars)
    {
        string path = Path.Combine(RepoPaths.Corpus, file);
        var source = new TextSource(path, chunkChars: chunkChars);
        var pieces = source.Chunks().ToList();
        Assert.True(pieces.Count > 100);
        Assert.Equal(File.ReadAllText(path), string.Concat(pieces.Select(p => p.Text)));
        var piecewise = pieces.SelectMany(p => fixture.Tokenizer.Encode(p.Text));
        Assert.Equal(fixture.Tokenizer.Encode(File.ReadAllText(path)), piecewise);
    }

    /// <summary>
    /// Random text from the characters the pre-tokenizer regex treats specially, cut as small as allowed. Samples that
    /// needed a forced cut (no safe cut within the hard limit) are left out: only the safe-cut rule is on trial here.
    /// </summary>
    [Fact]
    public void PiecewiseLlama3IdsEqualWholeDocumentIdsOnAdversarialText()
    {
        string[] alphabet = ["a", "Z", "é", "日", " ", "  ", "\n", "\r\n", "\t", "'s", "'LL", "'", "7", "1234", ".", "?!", "😀", "\u00a0", "\u2028"];
        var random = new Random(1234);
        int cuts = 0;
        for (int sample = 0; sample < 400; sample++)
        {
            string text = string.Concat(Enumerable.Range(0, 80).Select(_ => alphabet[random.Next(alphabet.Length)]));
            var pieces = SafeChunker.Split(new StringReader(text), 16).ToList();
            Assert.Equal(text, string.Concat(pieces));
            var ends = pieces.Take(pieces.Count - 1).Select(p => p.Length).ToList();
            var boundaries = ends.Select((_, i) => ends.Take(i + 1).Sum()).ToList();
            if (!boundaries.All(at => SafeChunker.IsSafeCut(text[at - 1], text[at])))
                continue;
            cuts += boundaries.Count;
            Assert.Equal(fixture.Tokenizer.Encode(text), pieces.SelectMany(p => fixture.Tokenizer.Encode(p)));
        }
        Assert.True(cuts > 300, $"only {cuts} safe cuts were exercised");
    }

    [Fact]
    public void TextWithoutSafeCutsIsStillCutToBoundMemory()
    {
        using var dir = new TempDir();
        string file = dir.Write("digits.txt", new string('7', 1000));
        var pieces = new TextSource(file, chunkChars: 16).Chunks().ToList();
        Assert.True(pieces.Count > 1);
        Assert.All(pieces, p => Assert.True(p.Text.Length <= 4 * 16 + 64));
        Assert.Equal(1000, pieces.Sum(p => p.Text.Length));
    }
}
