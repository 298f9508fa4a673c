namespace Bflora.Data;

/// <summary>
/// The one windowing used by training and evaluation (DESIGN "Deliberate differences"). Per document: its ids with a
/// BOS in front (no EOS) are appended to a carry-over buffer; while the buffer holds at least seq_len + 1 ids, the
/// window buffer[0 .. seq_len] is emitted and the first seq_len ids are dropped. So consecutive windows overlap by one
/// id (the last label of one is the first input of the next), windows run across document ends, and nothing but the
/// final &lt; seq_len + 1 ids of the whole pass is left unused. Documents are tokenized one piece at a time, as the
/// windows are asked for, so memory stays at one piece plus one window.
/// With <c>cycle</c>, the reader starts a new pass (epoch) when the data or <c>windowsPerEpoch</c> runs out, as the
/// original restarts its iterator on exhaustion; without it, <see cref="TryNext"/> then returns false.
/// Dispose it to close the file it is reading when it is dropped before the end.
/// </summary>
public sealed class WindowReader : IDisposable
{
    private readonly TextSource _source;
    private readonly ITokenizer _tokenizer;
    private readonly long _windowsPerEpoch;
    private readonly bool _cycle;

    // The buffer is _buffer[_head ..]; ids before _head are spent and compacted away now and then.
    private readonly List<int> _buffer = [];
    private int _head;
    private IEnumerator<DocumentChunk>? _chunks;
    private bool _resumeSkipPending;

    // What the cursor needs: the piece read last, where its ids start in _buffer, and how many of them were skipped.
    private long _document;
    private int _chunk;
    private int _chunkStart;
    private int _chunkSkip;
    private int _epoch;
    private long _windowInEpoch;

    public WindowReader(
        TextSource source, ITokenizer tokenizer, int seqLen, WindowCursor? from = null,
        long windowsPerEpoch = long.MaxValue, bool cycle = false)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(seqLen, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(windowsPerEpoch, 1);
        _source = source;
        _tokenizer = tokenizer;
        SeqLen = seqLen;
        _windowsPerEpoch = windowsPerEpoch;
        _cycle = cycle;
        Restore(from ?? WindowCursor.Start);
    }

    public int SeqLen { get; }

    /// <summary>Why no window can be made of the data, in the words both training and eval use.</summary>
    public string TooShortMessage => $"dataset {_source.DataPath} holds fewer than seq_len + 1 = {SeqLen + 1} tokens; no window can be made";

    public WindowCursor Cursor
    {
        get
        {
            if (_head >= _chunkStart)
                return new(_epoch, _windowInEpoch, _document, _chunk, _chunkSkip + _head - _chunkStart, []);
            int[] carry = _buffer.GetRange(_head, _chunkStart - _head).ToArray();
            return new(_epoch, _windowInEpoch, _document, _chunk, _chunkSkip, carry);
        }
    }

    /// <summary>The next window of <see cref="SeqLen"/> + 1 ids, or false at the end of a non-cycling reader.</summary>
    public bool TryNext(out int[] window)
    {
        window = [];
        if (!Advance())
            return false;
        window = new int[SeqLen + 1];
        _buffer.CopyTo(_head, window, 0, SeqLen + 1);
        Consume();
        return true;
    }

    /// <summary>Steps over up to <paramref name="count"/> windows without copying them; returns how many it passed.</summary>
    public long Skip(long count)
    {
        long skipped = 0;
        for (; skipped < count && Advance(); skipped++)
            Consume();
        return skipped;
    }

    public void Dispose()
    {
        _chunks?.Dispose();
        _chunks = null;
    }

    /// <summary>Windows in the whole source: every id of the pass but the last is an input of exactly one window.</summary>
    public static long CountWindows(TextSource source, ITokenizer tokenizer, int seqLen)
    {
        long ids = 0;
        foreach (var chunk in source.Chunks())
            ids += tokenizer.Encode(chunk.Text).Count + (chunk.Chunk == 0 ? 1 : 0);
        return ids > seqLen ? (ids - 1) / seqLen : 0;
    }

    /// <summary>Makes a full window available at _head; false when a non-cycling reader has run out.</summary>
    private bool Advance()
    {
        while (true)
        {
            if (_windowInEpoch < _windowsPerEpoch && _buffer.Count - _head >= SeqLen + 1)
                return true;
            if (_windowInEpoch < _windowsPerEpoch && ReadChunk())
                continue;
            if (!_cycle)
                return false;
            if (_windowInEpoch == 0)
                throw new InvalidDataException(TooShortMessage);
            Restore(WindowCursor.Start with { Epoch = _epoch + 1 });
        }
    }

    private void Consume()
    {
        _head += SeqLen;
        _windowInEpoch++;
    }

    private bool ReadChunk()
    {
        _chunks ??= _source.Chunks(_document, _chunk).GetEnumerator();
        if (!_chunks.MoveNext())
            return false;
        var piece = _chunks.Current;
        Compact();
        int skip = _resumeSkipPending ? _chunkSkip : 0;
        _resumeSkipPending = false;
        _document = piece.Document;
        _chunk = piece.Chunk;
        _chunkStart = _buffer.Count;
        _chunkSkip = skip;
        // BOS is id 0 of a document's first piece, so a cursor's skip can count it like any other id.
        if (piece.Chunk == 0 && skip == 0)
            _buffer.Add(_tokenizer.BosId);
        var ids = _tokenizer.Encode(piece.Text);
        int firstId = piece.Chunk == 0 ? Math.Max(0, skip - 1) : skip;
        for (int i = firstId; i < ids.Count; i++)
            _buffer.Add(ids[i]);
        return true;
    }

    private void Compact()
    {
        if (_head == 0)
            return;
        _buffer.RemoveRange(0, _head);
        _chunkStart -= _head;
        _head = 0;
    }

    private void Restore(WindowCursor cursor)
    {
        _buffer.Clear();
        _buffer.AddRange(cursor.Carry);
        _head = 0;
        Dispose();
        _epoch = cursor.Epoch;
        _windowInEpoch = cursor.WindowInEpoch;
        _document = cursor.Document;
        _chunk = cursor.Chunk;
        _chunkStart = cursor.Carry.Length;
        _chunkSkip = cursor.SkipInChunk;
        _resumeSkipPending = true;
    }
}
