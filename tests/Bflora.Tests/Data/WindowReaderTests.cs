using Bflora.Data;
using Xunit;

namespace Bflora.Tests.Data;

public sealed class WindowReaderTests
{
    private static readonly ByteTokenizer Bytes = new();

    private static List<int[]> ReadAll(WindowReader reader)
    {
        var windows = new List<int[]>();
        while (reader.TryNext(out var w))
            windows.Add(w);
        return windows;
    }

    /// <summary>Several documents of uneven length, long enough to span many 16-character pieces.</summary>
    private static TempDir MixedDataset()
    {
        var dir = new TempDir();
        dir.Write("1.txt", "The quick brown fox jumps over the lazy dog.\nAnd then it slept for a while.\n");
        dir.Write("2.jsonl", "{\"text\":\"short\"}\n{\"text\":\"\"}\n{\"text\":\"a somewhat longer line of text here\"}\n");
        dir.Write("3.txt", "x");
        dir.Write("4.txt", string.Join(" ", Enumerable.Range(0, 30).Select(i => $"w{i}")));
        return dir;
    }

    [Fact]
    public void KnownTextGivesBosPerDocumentOverlapOfOneAndCarryOver()
    {
        using var dir = new TempDir();
        dir.Write("a.txt", "abc");
        dir.Write("b.txt", "de");
        var windows = ReadAll(new WindowReader(new TextSource(dir.Path), Bytes, seqLen: 2));
        // Stream: BOS a b c BOS d e; windows of 3 ids at stride 2; the final "e" alone is left over.
        int[][] expected = [[256, 'a', 'b'], ['b', 'c', 256], [256, 'd', 'e']];
        Assert.Equal(expected, windows);
        Assert.Equal(3, WindowReader.CountWindows(new TextSource(dir.Path), Bytes, 2));
    }

    [Fact]
    public void WindowsDoNotDependOnPieceSize()
    {
        using var dir = MixedDataset();
        var small = ReadAll(new WindowReader(new TextSource(dir.Path, chunkChars: 16), Bytes, 5));
        var large = ReadAll(new WindowReader(new TextSource(dir.Path), Bytes, 5));
        Assert.Equal(large, small);
        Assert.Equal(WindowReader.CountWindows(new TextSource(dir.Path), Bytes, 5), large.Count);
    }

    [Fact]
    public void SavedCursorResumesWithExactlyTheNextWindowAfterEveryWindow()
    {
        using var dir = MixedDataset();
        var source = new TextSource(dir.Path, chunkChars: 16);
        var all = ReadAll(new WindowReader(source, Bytes, 7));
        Assert.True(all.Count > 20);

        var reader = new WindowReader(source, Bytes, 7);
        for (int k = 0; k <= all.Count; k++)
        {
            var json = reader.Cursor.ToJson();
            var resumed = new WindowReader(source, Bytes, 7, WindowCursor.FromJson(json));
            Assert.Equal(reader.Cursor, resumed.Cursor);
            Assert.Equal(all.Skip(k), ReadAll(resumed));
            Assert.Equal(k < all.Count, reader.TryNext(out _));
        }
    }

    [Fact]
    public void CursorOfADryReaderKeepsTheUnusedCarry()
    {
        using var dir = new TempDir();
        dir.Write("a.txt", "abcd");
        dir.Write("b.txt", "e");
        var reader = new WindowReader(new TextSource(dir.Path), Bytes, seqLen: 4);
        Assert.True(reader.TryNext(out var first));
        Assert.Equal([256, 'a', 'b', 'c', 'd'], first);
        Assert.Equal(new WindowCursor(0, 1, 0, 0, 4, []), reader.Cursor);
        Assert.False(reader.TryNext(out _));
        // "d" is still buffered from document 0 when document 1 (BOS e) is read and the data ends.
        Assert.Equal(new WindowCursor(0, 1, 1, 0, 0, ['d']), reader.Cursor);
    }

    [Fact]
    public void CyclingReaderStartsANewEpochAndItsCursorSurvivesTheWrap()
    {
        using var dir = MixedDataset();
        var source = new TextSource(dir.Path, chunkChars: 16);
        var once = ReadAll(new WindowReader(source, Bytes, 9));
        var cycling = new WindowReader(source, Bytes, 9, windowsPerEpoch: 5, cycle: true);
        for (int i = 0; i < 12; i++)
        {
            Assert.True(cycling.TryNext(out var w));
            Assert.Equal(once[i % 5], w);
        }
        Assert.Equal(2, cycling.Cursor.Epoch);
        Assert.Equal(2, cycling.Cursor.WindowInEpoch);
        var resumed = new WindowReader(source, Bytes, 9, cycling.Cursor, windowsPerEpoch: 5, cycle: true);
        Assert.True(resumed.TryNext(out var next));
        Assert.Equal(once[2], next);
    }

    [Fact]
    public void CyclingOverTooLittleDataIsAnError()
    {
        using var dir = new TempDir();
        dir.Write("a.txt", "tiny");
        var reader = new WindowReader(new TextSource(dir.Path), Bytes, 64, cycle: true);
        var error = Assert.Throws<InvalidDataException>(() => reader.TryNext(out _));
        Assert.Contains("65", error.Message);
        Assert.False(new WindowReader(new TextSource(dir.Path), Bytes, 64).TryNext(out _));
    }

    [Fact]
    public void HeldOutSplitIsTheDisjointTailOfTheWindowStream()
    {
        Assert.Equal(new WindowSplit(100, 89, 90, 10), WindowSplit.Of(100));
        Assert.Equal(new WindowSplit(5, 3, 4, 1), WindowSplit.Of(5));
        Assert.Throws<InvalidDataException>(() => WindowSplit.Of(2));

        using var dir = MixedDataset();
        var source = new TextSource(dir.Path, chunkChars: 16);
        const int seqLen = 4;
        var all = ReadAll(new WindowReader(source, Bytes, seqLen));
        var split = WindowSplit.Compute(source, Bytes, seqLen);
        Assert.Equal(all.Count, split.Total);

        var train = split.OpenTrain(source, Bytes, seqLen);
        var trainWindows = Enumerable.Range(0, (int)split.TrainCount * 2).Select(_ => train.TryNext(out var w) ? w : null).ToList();
        Assert.Equal(all.Take((int)split.TrainCount).Concat(all.Take((int)split.TrainCount)), trainWindows);
        var heldOut = ReadAll(split.OpenHeldOut(source, Bytes, seqLen));
        Assert.Equal(all.Skip((int)split.HeldOutStart), heldOut);

        // Window i covers stream positions [i·seqLen, (i+1)·seqLen]; the dropped window keeps the two sets apart.
        long lastTrainPosition = split.TrainCount * seqLen;
        long firstHeldOutPosition = split.HeldOutStart * seqLen;
        Assert.True(lastTrainPosition < firstHeldOutPosition);
    }
}
