using System.Buffers.Binary;
using System.Reflection;
using Parquet;

namespace Bflora.Data;

/// <summary>
/// Keeps a corrupt Parquet file from hanging the reader. Parquet.Net's Thrift decoder takes the end of its input for
/// 0xFF bytes, and a varint of 0xFF bytes never ends: a footer or page header cut short inside a value, or with one bit
/// flipped, made it spin for good. Page headers are read from the stream bflora hands over, which here refuses to read
/// past the end; the footer is decoded from the library's own copy, so the library's decoder is first run over the
/// footer bytes from such a stream, where the same bytes end in an exception instead.
/// </summary>
internal static class ParquetGuards
{
    /// <summary>The file as a stream that throws at its end and after reading far more than the file holds.</summary>
    public static Stream Open(string file)
    {
        var stream = File.OpenRead(file);
        // One column of every row group is read once; four times the file is room enough, and a loop runs past it.
        return new EndCheckedStream(stream, readBudget: 4 * stream.Length + (1 << 20));
    }

    /// <summary>Decodes the footer of <paramref name="stream"/> the way the reader will, so a corrupt one fails instead of hanging.</summary>
    public static void CheckFooter(Stream stream, string file)
    {
        if (stream.Length < 12)
            throw new InvalidDataException($"{file}: {stream.Length} bytes, too short for a Parquet file");
        Span<byte> tail = stackalloc byte[8];
        stream.Seek(-8, SeekOrigin.End);
        stream.ReadExactly(tail);
        int length = BinaryPrimitives.ReadInt32LittleEndian(tail);
        if (!tail[4..].SequenceEqual("PAR1"u8))
            throw new InvalidDataException($"{file}: not a Parquet file (it does not end in PAR1)");
        if (length <= 0 || length > stream.Length - 12)
            throw new InvalidDataException($"{file}: the footer length {length} does not fit a file of {stream.Length} bytes");
        var footer = new byte[length];
        stream.Seek(-8 - length, SeekOrigin.End);
        stream.ReadExactly(footer);
        stream.Seek(0, SeekOrigin.Begin);
        try
        {
            ReadFileMetaData.Invoke(null, [Activator.CreateInstance(ProtocolReader, new EndCheckedStream(new MemoryStream(footer)))]);
        }
        catch (TargetInvocationException e) when (e.InnerException is { } inner)
        {
            throw new InvalidDataException($"{file}: the Parquet footer is corrupt ({OneLine.Of(inner.Message)})", inner);
        }
    }

    // The pinned Parquet.Net's internal footer decoder; a version without it fails every Parquet test at once.
    private static readonly Type ProtocolReader = Internal("Parquet.Meta.Proto.ThriftCompactProtocolReader");

    private static readonly MethodInfo ReadFileMetaData =
        Internal("Parquet.Meta.FileMetaData").GetMethod("Read", BindingFlags.Static | BindingFlags.NonPublic, [ProtocolReader])
        ?? throw new MissingMethodException("Parquet.Meta.FileMetaData.Read is not in this Parquet.Net");

    private static Type Internal(string name) =>
        typeof(ParquetReader).Assembly.GetType(name, throwOnError: true)!;

    /// <summary>A read-only view of a stream whose end is an error, as is reading more than a budget in all.</summary>
    private sealed class EndCheckedStream(Stream inner, long readBudget = long.MaxValue) : Stream
    {
        private long _read;

        public override bool CanRead => true;
        public override bool CanSeek => inner.CanSeek;
        public override bool CanWrite => false;
        public override long Length => inner.Length;

        public override long Position
        {
            get => inner.Position;
            set => inner.Position = value;
        }

        public override int ReadByte()
        {
            int b = inner.ReadByte();
            if (b < 0) throw new EndOfStreamException("the data ends inside a value");
            Count(1);
            return b;
        }

        public override int Read(byte[] buffer, int offset, int count) => Count(inner.Read(buffer, offset, count));

        public override int Read(Span<byte> buffer) => Count(inner.Read(buffer));

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
            Count(await inner.ReadAsync(buffer, cancellationToken));

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override long Seek(long offset, SeekOrigin origin) => inner.Seek(offset, origin);

        public override void Flush() { }

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (disposing) inner.Dispose();
            base.Dispose(disposing);
        }

        private int Count(int bytes)
        {
            _read += bytes;
            if (_read > readBudget)
                throw new InvalidDataException($"reading went past {readBudget:N0} bytes, more than the file can need: its metadata loops");
            return bytes;
        }
    }
}
