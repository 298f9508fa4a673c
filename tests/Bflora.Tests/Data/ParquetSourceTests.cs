using Bflora.Data;
using Parquet;
using Parquet.Schema;
using Xunit;

namespace Bflora.Tests.Data;

public sealed class ParquetSourceTests
{
    private static readonly ByteTokenizer Bytes = new();

    /// <summary>Writes one Parquet file with a string column "text", an int column "id", one row group per array.</summary>
    internal static string WriteParquet(string path, params string?[][] rowGroups)
    {
        Write().GetAwaiter().GetResult();
        return path;

        async Task Write()
        {
            var text = new DataField<string>("text");
            var id = new DataField<int>("id");
            await using var stream = File.Create(path);
            await using var writer = await ParquetWriter.CreateAsync(new ParquetSchema(text, id), stream);
            int next = 0;
            foreach (var rows in rowGroups)
            {
                using var group = writer.CreateRowGroup();
                await group.WriteAsync(text, rows);
                await group.WriteAsync(id, (ReadOnlyMemory<int>)Enumerable.Range(next, rows.Length).ToArray());
                next += rows.Length;
            }
        }
    }

    private static List<string> DocumentTexts(TextSource source) =>
        source.Chunks().GroupBy(c => c.Document).Select(g => string.Concat(g.Select(c => c.Text))).ToList();

    [Fact]
    public void RowsOfAllRowGroupsAreDocumentsInOrder()
    {
        using var dir = new TempDir();
        string file = WriteParquet(Path.Combine(dir.Path, "shard.parquet"), ["one", "two words"], ["", "three"]);
        Assert.Equal(["one", "two words", "", "three"], DocumentTexts(new TextSource(file)));
    }

    [Fact]
    public void FolderMixesParquetWithTextInSortedOrderAndWindowsMatchTheSameText()
    {
        using var dir = new TempDir();
        WriteParquet(Path.Combine(dir.Path, "b.parquet"), ["abc", "de"], ["fgh"]);
        dir.Write("a.txt", "xy");
        var source = new TextSource(dir.Path);
        Assert.Equal(["a.txt", "b.parquet"], source.Files.Select(f => Path.GetRelativePath(dir.Path, f)));
        Assert.Equal(["xy", "abc", "de", "fgh"], DocumentTexts(source));

        using var plain = new TempDir();
        plain.Write("d.jsonl", "{\"text\":\"xy\"}\n{\"text\":\"abc\"}\n{\"text\":\"de\"}\n{\"text\":\"fgh\"}\n");
        Assert.Equal(ReadAll(new TextSource(plain.Path)), ReadAll(source));
    }

    [Fact]
    public void LongRowsAreChunkedAndResumeSkipsWholeRowGroups()
    {
        using var dir = new TempDir();
        string longRow = string.Join(" ", Enumerable.Repeat("word", 20));
        string file = WriteParquet(Path.Combine(dir.Path, "s.parquet"), ["a", "b"], [longRow, "c"]);
        var source = new TextSource(file, chunkChars: 16);
        var all = source.Chunks().ToList();
        Assert.True(all.Count(c => c.Document == 2) > 3);
        foreach (var start in all)
            Assert.Equal(all.SkipWhile(c => c != start), source.Chunks(start.Document, start.Chunk));
    }

    [Fact]
    public void MissingOrNonStringColumnNamesFileAndColumn()
    {
        using var dir = new TempDir();
        string file = WriteParquet(Path.Combine(dir.Path, "s.parquet"), ["a"]);
        var missing = Assert.Throws<InvalidDataException>(() => DocumentTexts(new TextSource(file, textField: "content")));
        Assert.Contains(file, missing.Message);
        Assert.Contains("no column 'content'", missing.Message);
        var wrongType = Assert.Throws<InvalidDataException>(() => DocumentTexts(new TextSource(file, textField: "id")));
        Assert.Contains("column 'id' is Int32, not a string column", wrongType.Message);
    }

    [Fact]
    public void ANullRowIsAnErrorNamingFileRowAndColumn()
    {
        using var dir = new TempDir();
        string file = WriteParquet(Path.Combine(dir.Path, "s.parquet"), ["a"], ["b", null]);
        var error = Assert.Throws<InvalidDataException>(() => DocumentTexts(new TextSource(file)));
        Assert.Equal($"{file} row 2: column 'text' is null", error.Message);
    }

    [Fact]
    public void AFileThatIsNotParquetIsAnErrorNamingIt()
    {
        using var dir = new TempDir();
        string file = dir.Write("shard-0.parquet", "PAR1 but not really");
        var error = Assert.Throws<InvalidDataException>(() => DocumentTexts(new TextSource(dir.Path)));
        Assert.Contains(file, error.Message);
    }

    [Fact]
    public async Task A_footer_ending_inside_a_value_is_an_error_not_a_hang()
    {
        // The footer's last byte ends its outermost struct; as a field header instead, the footer's decoder reads on
        // past the end, where Parquet.Net alone would spin for good.
        using var dir = new TempDir();
        string file = WriteParquet(Path.Combine(dir.Path, "s.parquet"), ["a", "b"]);
        byte[] bytes = File.ReadAllBytes(file);
        Assert.Equal(0, bytes[^9]);
        bytes[^9] = 1;
        File.WriteAllBytes(file, bytes);
        var read = Task.Run(() => DocumentTexts(new TextSource(file)));
        Assert.Same(read, await Task.WhenAny(read, Task.Delay(TimeSpan.FromSeconds(60))));
        var error = await Assert.ThrowsAsync<InvalidDataException>(() => read);
        Assert.StartsWith($"{file}: the Parquet footer is corrupt", error.Message);
    }

    [Fact]
    public void A_footer_length_that_does_not_fit_the_file_is_an_error_naming_it()
    {
        using var dir = new TempDir();
        string file = WriteParquet(Path.Combine(dir.Path, "s.parquet"), ["a"]);
        byte[] bytes = File.ReadAllBytes(file);
        BitConverter.TryWriteBytes(bytes.AsSpan(bytes.Length - 8), bytes.Length);
        File.WriteAllBytes(file, bytes);
        var error = Assert.Throws<InvalidDataException>(() => DocumentTexts(new TextSource(file)));
        Assert.Equal($"{file}: the footer length {bytes.Length} does not fit a file of {bytes.Length} bytes", error.Message);
    }

    private static List<int[]> ReadAll(TextSource source)
    {
        using var reader = new WindowReader(source, Bytes, seqLen: 3);
        var windows = new List<int[]>();
        while (reader.TryNext(out var w)) windows.Add(w);
        return windows;
    }
}
