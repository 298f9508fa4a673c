namespace Bflora.Data;

/// <summary>
/// A train / held-out split of one source's window stream (the windows of <see cref="WindowReader"/>, indices
/// 0 .. Total-1, in order). The last <c>floor(Total · fraction)</c> windows (at least 1) are held out; the window just
/// before them is dropped, because consecutive windows share one id, so that no token position is in both sets:
/// train = [0, HeldOutStart - 1), held out = [HeldOutStart, Total). It depends only on the data, the tokenizer and
/// seq_len, never on batch size, world size or accumulation. Finding Total costs one tokenizing pass over the source,
/// which is why the split is for bounded sources such as the bundled corpus, not for a streamed web-scale dataset.
/// </summary>
public sealed record WindowSplit(long Total, long TrainCount, long HeldOutStart, long HeldOutCount)
{
    public const double DefaultHeldOutFraction = 0.1;

    public static WindowSplit Of(long totalWindows, double heldOutFraction = DefaultHeldOutFraction)
    {
        if (heldOutFraction is <= 0 or >= 1)
            throw new ArgumentOutOfRangeException(nameof(heldOutFraction), heldOutFraction, "must lie strictly between 0 and 1");
        if (totalWindows < 3)
            throw new InvalidDataException(
                $"a held-out split needs at least 3 windows (train, the dropped boundary window, held out); the data makes {totalWindows}");
        long heldOut = Math.Max(1, (long)Math.Floor(totalWindows * heldOutFraction));
        long start = totalWindows - heldOut;
        return new WindowSplit(totalWindows, start - 1, start, heldOut);
    }

    public static WindowSplit Compute(
        TextSource source, ITokenizer tokenizer, int seqLen, double heldOutFraction = DefaultHeldOutFraction) =>
        Of(WindowReader.CountWindows(source, tokenizer, seqLen), heldOutFraction);

    /// <summary>The training windows, repeated epoch after epoch; <paramref name="from"/> resumes a saved cursor.</summary>
    public WindowReader OpenTrain(TextSource source, ITokenizer tokenizer, int seqLen, WindowCursor? from = null) =>
        new(source, tokenizer, seqLen, from, windowsPerEpoch: TrainCount, cycle: true);

    /// <summary>The held-out windows, once, in order.</summary>
    public WindowReader OpenHeldOut(TextSource source, ITokenizer tokenizer, int seqLen)
    {
        var reader = new WindowReader(source, tokenizer, seqLen);
        if (reader.Skip(HeldOutStart) != HeldOutStart)
            throw new InvalidDataException($"the data changed: {source.DataPath} no longer makes {Total} windows");
        return reader;
    }
}
