using Xunit;
using Bflora.Data;

namespace Bflora.Tests.Data;

public sealed class ByteTokenizerTests
{
    [Theory]
    [InlineData("plain ASCII text\n")]
    [InlineData("£100")]
    [InlineData("日本語のテキスト")]
    [InlineData("emoji 👩‍💻 and 🎉")]
    [InlineData("")]
    public void RoundTripsUtf8(string text)
    {
        var tok = new ByteTokenizer();
        var ids = tok.Encode(text);
        Assert.Equal(System.Text.Encoding.UTF8.GetByteCount(text), ids.Count);
        Assert.All(ids, id => Assert.InRange(id, 0, 255));
        Assert.Equal(text, tok.Decode(ids));
    }

    [Fact]
    public void SpecialIdsSitAboveTheBytes()
    {
        var tok = new ByteTokenizer();
        Assert.Equal((258, 256, 257), (tok.VocabSize, tok.BosId, tok.EosId));
        Assert.Equal([0xC2, 0xA3], tok.Encode("£"));
        Assert.Equal("£", tok.Decode([tok.BosId, 0xC2, 0xA3, tok.EosId]));
    }

    [Fact]
    public void FactoryBuildsEitherKindAndRejectsOthers()
    {
        Assert.IsType<ByteTokenizer>(Tokenizers.Create("byte", null));
        Assert.Throws<ArgumentException>(() => Tokenizers.Create("gpt2", null));
        Assert.Throws<ArgumentException>(() => Tokenizers.Create("llama3", null));
        Assert.Throws<FileNotFoundException>(() => Tokenizers.Create("llama3", "/nonexistent/tokenizer.json"));
    }
}
