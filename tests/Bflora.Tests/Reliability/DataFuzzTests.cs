using System.Text;
using Bflora.Data;
using Bflora.Tests.Checkpoints;
using Bflora.Tests.Data;
using Xunit;

namespace Bflora.Tests.Reliability;

/// <summary>
/// Seeded mutations of the data files a run reads (Parquet shards, JSON lines) through <see cref="TextSource"/>: each
/// file either reads or fails with one line naming it, never with the Parquet library's or the JSON parser's own crash.
/// </summary>
public class DataFuzzTests
{
    /// <summary>Bytes that mean something in a Parquet file (written as Latin-1): its magic, Thrift field headers, lengths small and huge.</summary>
    private static readonly string[] ParquetTokens =
    [
        "PAR1", "\0\0\0\0", "\u00ff\u00ff\u00ff\u007f", "\u00ff\u00ff\u00ff\u00ff", "\u0015\0", "\u0019\u001c",
        "\u0018\u0004text", "\u0016\u00fe\u00ff\u00ff\u00ff\u000f",
    ];

    private static readonly string[] JsonlTokens = ["{", "}", "\"", "\n", "\"text\":", "null", "1e400", "[1]", "\\ud800", "\\u0000"];

    private static void ReadAll(string path) =>
        // Every piece is read: a broken row group shows only when it is decoded.
        new TextSource(path, chunkChars: 64).Chunks().Count();

    private static void ExpectClean(int seed, int iteration, string path) =>
        LoaderFuzzTests.ExpectClean(seed, iteration, () => ReadAll(path), typeof(InvalidDataException), typeof(BfloraInputException));

    [Fact]
    public void Mutated_parquet_shards_fail_only_with_data_errors()
    {
        using var dir = new TempFolder();
        string file = dir.File("shard.parquet");
        // Two row groups of a text column beside an int column, as a Hugging Face dataset shard has.
        ParquetSourceTests.WriteParquet(file, ["It is a truth universally acknowledged", "été"], ["Call me Ishmael.", ""]);
        byte[] original = File.ReadAllBytes(file);
        ReadAll(file);
        const int seed = 8;
        var rng = new Random(seed);
        for (int i = 0; i < 1500; i++)
        {
            // Half the mutations land in the footer (schema, row-group metadata), where the reader decides what to allocate.
            int from = rng.Next(2) == 0 ? Math.Max(0, original.Length - 400) : 0;
            byte[] bytes = LoaderFuzzTests.Mutate(rng, original, ParquetTokens, from, original.Length, Encoding.Latin1);
            File.WriteAllBytes(file, bytes);
            ExpectClean(seed, i, file);
        }
    }

    [Fact]
    public void Mutated_jsonl_files_fail_only_with_data_errors()
    {
        using var dir = new TempFolder();
        string file = dir.File("docs.jsonl");
        byte[] original = Encoding.UTF8.GetBytes(
            "{\"text\": \"It is a truth universally acknowledged\", \"id\": 1}\n\n{\"text\": \"Call me Ishmael. été\"}\n");
        File.WriteAllBytes(file, original);
        ReadAll(file);
        const int seed = 8;
        var rng = new Random(seed);
        for (int i = 0; i < 1500; i++)
        {
            File.WriteAllBytes(file, LoaderFuzzTests.Mutate(rng, original, JsonlTokens, 0, original.Length));
            ExpectClean(seed, i, file);
        }
    }
}
