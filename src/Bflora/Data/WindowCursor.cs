using System.Text.Json;

namespace Bflora.Data;

/// <summary>
/// Where a <see cref="WindowReader"/> stands, small enough for a checkpoint's JSON. Resuming from it yields exactly the
/// window that would have come next. The carry-over buffer is described by the piece it last read
/// (<see cref="Document"/>, <see cref="Chunk"/>), how many of that piece's ids (BOS included on piece 0) are already
/// behind the buffer's head (<see cref="SkipInChunk"/>), and the ids still buffered from earlier pieces
/// (<see cref="Carry"/>, at most seq_len of them; after a window is emitted the head always lies in the last piece, so
/// only a reader that has run dry has a carry). <see cref="WindowInEpoch"/> counts windows emitted in this pass over
/// the data, <see cref="Epoch"/> the completed passes.
/// </summary>
public sealed record WindowCursor(int Epoch, long WindowInEpoch, long Document, int Chunk, int SkipInChunk, int[] Carry)
{
    public static readonly WindowCursor Start = new(0, 0, 0, 0, 0, []);

    public string ToJson() => JsonSerializer.Serialize(this);

    public static WindowCursor FromJson(string json) =>
        JsonSerializer.Deserialize<WindowCursor>(json) ?? throw new InvalidDataException("empty window cursor JSON");

    public bool Equals(WindowCursor? other) =>
        other is not null && (Epoch, WindowInEpoch, Document, Chunk, SkipInChunk) ==
        (other.Epoch, other.WindowInEpoch, other.Document, other.Chunk, other.SkipInChunk) && Carry.SequenceEqual(other.Carry);

    public override int GetHashCode() => HashCode.Combine(Epoch, WindowInEpoch, Document, Chunk, SkipInChunk, Carry.Length);
}
