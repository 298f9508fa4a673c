using Bflora.Data;
using Xunit;

namespace Bflora.Tests.Data;

public sealed class TextSourceTests
{
    private static List<string> DocumentTexts(TextSource source) =>
        source.Chunks().GroupBy(c => c.Document).Select(g => string.Concat(g.Select(c => c.Text))).ToList();

    [Fact]
    public void FolderReadsTxtAndJsonlRecursivelyInOrdinalPathOrder()
    {
        using var dir = new TempDir();
        dir.Write("b.txt", "bee\n");
        dir.Write("a/z.jsonl", "{\"text\":\"one\"}\n\n{\"text\":\"two\",\"id\":3}\n");
        dir.Write("B.txt", "upper");
        dir.Write("README.md", "not data");
        var source = new TextSource(dir.Path);
        Assert.Equal(["B.txt", "a/z.jsonl", "b.txt"], source.Files.Select(f => Path.GetRelativePath(dir.Path, f)));
        Assert.Equal(["upper", "one", "two", "bee\n"], DocumentTexts(source));
    }

    [Fact]
    public void JsonlUsesTheConfiguredField()
    {
        using var dir = new TempDir();
        string file = dir.Write("d.jsonl", "{\"content\":\"x\"}\n{\"content\":\"y\"}\n");
        Assert.Equal(["x", "y"], DocumentTexts(new TextSource(file, textField: "content")));
    }

    [Fact]
    public void JsonlWithMissingFieldNamesLineAndField()
    {
        using var dir = new TempDir();
        string file = dir.Write("d.jsonl", "{\"text\":\"ok\"}\n{\"body\":\"no\"}\n");
        var error = Assert.Throws<InvalidDataException>(() => DocumentTexts(new TextSource(file)));
        Assert.Contains("line 2", error.Message);
        Assert.Contains("'text'", error.Message);
    }

    [Fact]
    public void Bytes_that_are_not_utf8_are_an_error_naming_the_file()
    {
        using var dir = new TempDir();
        string latin1 = Path.Combine(dir.Path, "latin1.txt");
        File.WriteAllBytes(latin1, [.. "caf"u8, 0xE9, .. " au lait"u8]);
        var txt = Assert.Throws<InvalidDataException>(() => DocumentTexts(new TextSource(latin1)));
        Assert.Equal($"{latin1}: not valid UTF-8 text (convert it first, e.g. iconv -f latin1 -t utf-8)", txt.Message);

        string jsonl = Path.Combine(dir.Path, "d.jsonl");
        File.WriteAllBytes(jsonl, [.. "{\"text\":\"ok\"}\n{\"text\":\"caf"u8, 0xE9, .. "\"}\n"u8]);
        var lines = Assert.Throws<InvalidDataException>(() => DocumentTexts(new TextSource(jsonl)));
        Assert.StartsWith($"{jsonl}: not valid UTF-8 text", lines.Message);

        // A byte-order mark still says how a file is encoded.
        string utf16 = Path.Combine(dir.Path, "utf16.txt");
        File.WriteAllText(utf16, "café", new System.Text.UnicodeEncoding(bigEndian: false, byteOrderMark: true));
        Assert.Equal(["café"], DocumentTexts(new TextSource(utf16)));
    }

    [Fact]
    public void EmptyOrDataFreeFoldersAreErrors()
    {
        using var dir = new TempDir();
        Assert.Throws<InvalidDataException>(() => new TextSource(dir.Path));
        dir.Write("README.md", "x");
        Assert.Throws<InvalidDataException>(() => new TextSource(dir.Path));
        dir.Write("empty.jsonl", "\n");
        var error = Assert.Throws<InvalidDataException>(() => DocumentTexts(new TextSource(dir.Path)));
        Assert.Contains("no documents", error.Message);
    }

    [Fact]
    public void UnsupportedOrMissingPathsAreErrors()
    {
        using var dir = new TempDir();
        Assert.Throws<BfloraInputException>(() => new TextSource(dir.Write("d.csv", "a,b")));
        Assert.Throws<FileNotFoundException>(() => new TextSource(Path.Combine(dir.Path, "nope.txt")));
    }

    [Fact]
    public void ResumingAtADocumentAndPieceSkipsExactlyThat()
    {
        using var dir = new TempDir();
        dir.Write("a.txt", string.Join(" ", Enumerable.Repeat("word", 40)));
        dir.Write("b.jsonl", "{\"text\":\"first\"}\n{\"text\":\"second\"}\n");
        var source = new TextSource(dir.Path, chunkChars: 16);
        var all = source.Chunks().ToList();
        Assert.True(all.Count(c => c.Document == 0) > 3);
        foreach (var start in all)
            Assert.Equal(all.SkipWhile(c => c != start), source.Chunks(start.Document, start.Chunk));
    }

    [Fact]
    public void ShippedCorpusIsSevenTxtDocuments()
    {
        var source = new TextSource(RepoPaths.Corpus);
        Assert.Equal(7, source.Files.Count);
        Assert.All(source.Files, f => Assert.EndsWith(".txt", f));
    }
}
