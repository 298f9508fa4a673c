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
