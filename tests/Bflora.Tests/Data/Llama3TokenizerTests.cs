using Xunit;
using System.Diagnostics;
using System.Security.Cryptography;
using System.Text.Json;
using Bflora.Data;
using Xunit.Abstractions;

namespace Bflora.Tests.Data;

public sealed class Llama3TokenizerTests(Llama3Fixture fixture, ITestOutputHelper output) : IClassFixture<Llama3Fixture>
{
    private readonly Llama3Tokenizer _tok = fixture.Tokenizer;

    [Fact]
    public void SpecialIdsAndVocabSizeAreLlama3s()
    {
        Assert.Equal(128256, _tok.VocabSize);
        Assert.Equal(128000, _tok.BosId);
        Assert.Equal(128001, _tok.EosId);
    }

    [Fact]
    public void EveryJsonGoldenCaseEncodesExactlyAndRoundTrips()
    {
        using var json = JsonDocument.Parse(File.ReadAllText(RepoPaths.Golden("llama3_golden.json")));
        var cases = json.RootElement.GetProperty("cases").EnumerateArray().ToList();
        Assert.Equal(44, cases.Count);
        foreach (var c in cases)
        {
            string text = c.GetProperty("text").GetString()!;
            var expected = c.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            Assert.Equal(expected, _tok.Encode(text));
            Assert.Equal(text, _tok.Decode(expected));
        }
    }

    [Fact]
    public void LlamaCppGgufVocabPairMatches()
    {
        const string separator = "\n__ggml_vocab_test__\n";
        var inputs = File.ReadAllText(RepoPaths.Golden("ggml-vocab-llama-bpe.gguf.inp")).Split(separator);
        Assert.Equal("", inputs[^1]); // trailing separator
        var outputs = File.ReadAllText(RepoPaths.Golden("ggml-vocab-llama-bpe.gguf.out")).Split('\n');
        Assert.Equal(44, inputs.Length - 1);
        for (int i = 0; i < inputs.Length - 1; i++)
        {
            var expected = outputs[i].Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToArray();
            Assert.Equal(expected, _tok.Encode(inputs[i]));
        }
    }

    [Fact]
    public void MetaReferenceEncodeAndDecodeCasesMatch()
    {
        using var json = JsonDocument.Parse(File.ReadAllText(RepoPaths.Golden("llama3_meta_cases.json")));
        var root = json.RootElement;
        foreach (var c in root.GetProperty("encode").EnumerateArray())
        {
            var ids = new List<int>();
            if (c.GetProperty("bos").GetBoolean()) ids.Add(_tok.BosId);
            ids.AddRange(_tok.Encode(c.GetProperty("text").GetString()!));
            if (c.GetProperty("eos").GetBoolean()) ids.Add(_tok.EosId);
            Assert.Equal(c.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()), ids);
        }
        foreach (var c in root.GetProperty("decode").EnumerateArray())
        {
            var ids = c.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32());
            Assert.Equal(c.GetProperty("text").GetString(), _tok.Decode(ids));
        }
        foreach (var special in root.GetProperty("special_tokens").EnumerateObject())
            Assert.Equal(special.Name, _tok.Decode([special.Value.GetInt32()]));
    }

    [Fact]
    public void SpecialTokenTextInDocumentsStaysPlainText()
    {
        var ids = _tok.Encode("a<|end_of_text|>b");
        Assert.DoesNotContain(_tok.EosId, ids);
        Assert.Equal("a<|end_of_text|>b", _tok.Decode(ids));
    }

    /// <summary>
    /// Whole-file regression against two independent implementations: count and sha256 of the ids as int32 LE.
    /// All seven files (5 MB) take well under a second, so the default run checks them all.
    /// </summary>
    [Fact]
    public void CorpusFilesMatchRecordedTokenCountsAndHashes()
    {
        using var json = JsonDocument.Parse(File.ReadAllText(RepoPaths.Golden("llama3_corpus_token_stats.json")));
        var files = json.RootElement.EnumerateObject().ToList();
        Assert.Equal(7, files.Count);

        long bytes = 0;
        var clock = Stopwatch.StartNew();
        foreach (var file in files)
        {
            string text = File.ReadAllText(Path.Combine(RepoPaths.Corpus, file.Name));
            var ids = _tok.Encode(text);
            bytes += file.Value.GetProperty("bytes").GetInt64();
            Assert.Equal(file.Value.GetProperty("tokens").GetInt32(), ids.Count);
            Assert.Equal(file.Value.GetProperty("sha256_int32le").GetString(), Sha256Int32Le(ids));
        }
        double seconds = clock.Elapsed.TotalSeconds;
        output.WriteLine($"encoded {bytes / 1e6:F2} MB in {seconds:F2} s = {bytes / 1e6 / seconds:F2} MB/s");
    }

    [Fact]
    public void CorpusWindowsCoverTheWholeTokenStream()
    {
        const int seqLen = 2048;
        const long corpusTokens = 1_263_791, documents = 7;
        var clock = Stopwatch.StartNew();
        using var reader = new WindowReader(new TextSource(RepoPaths.Corpus), _tok, seqLen);
        Assert.True(reader.TryNext(out var first));
        long windows = 1 + reader.Skip(long.MaxValue);
        output.WriteLine($"windowed the corpus in {clock.Elapsed.TotalSeconds:F2} s");

        Assert.Equal((corpusTokens + documents - 1) / seqLen, windows);
        using var stats = JsonDocument.Parse(File.ReadAllText(RepoPaths.Golden("llama3_corpus_token_stats.json")));
        var emmaStart = stats.RootElement.GetProperty("austen_emma.txt").GetProperty("first_64_ids").EnumerateArray().Select(e => e.GetInt32());
        Assert.Equal([_tok.BosId, .. emmaStart], first.Take(65));
    }

    private static string Sha256Int32Le(IReadOnlyList<int> ids)
    {
        var bytes = new byte[ids.Count * 4];
        for (int i = 0; i < ids.Count; i++)
            System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(i * 4), ids[i]);
        return Convert.ToHexStringLower(SHA256.HashData(bytes));
    }
}
