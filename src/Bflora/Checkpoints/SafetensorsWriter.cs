using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using static TorchSharp.torch;

namespace Bflora.Checkpoints;

/// <summary>Writes safetensors files the way the Hugging Face library lays them out, atomically.</summary>
public static class SafetensorsWriter
{
    internal const string MetadataKey = "__metadata__";

    /// <summary>
    /// Writes <paramref name="tensors"/> (bf16, f16 or f32; any device or layout) in name order. The file appears under
    /// <paramref name="path"/> only once complete, so a crash never leaves a half-written checkpoint behind.
    /// </summary>
    public static void Write(string path, IReadOnlyDictionary<string, Tensor> tensors,
        IReadOnlyDictionary<string, string>? metadata = null) => Write(path, TensorSource.Of(tensors), metadata);

    /// <summary>
    /// <see cref="Write(string, IReadOnlyDictionary{string, Tensor}, IReadOnlyDictionary{string, string}?)"/> from
    /// sources: the header comes from their shapes, then each is loaded, written and disposed in turn.
    /// </summary>
    public static void Write(string path, IReadOnlyList<TensorSource> sources, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var byName = new Dictionary<string, TensorSource>(StringComparer.Ordinal);
        foreach (var s in sources)
        {
            if (s.Name == MetadataKey)
                throw new ArgumentException($"'{MetadataKey}' is reserved for metadata and cannot name a tensor");
            if (!byName.TryAdd(s.Name, s)) throw new ArgumentException($"two tensors are named '{s.Name}'");
        }
        var ordered = byName.Keys.Order(StringComparer.Ordinal).Select(n => byName[n]).ToList();
        byte[] header = BuildHeader(ordered, metadata);

        AtomicFile.Write(path, stream =>
        {
            Span<byte> length = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)header.Length);
            stream.Write(length);
            stream.Write(header);
            foreach (var source in ordered)
            {
                using var t = source.Load();
                if (t.dtype != source.Dtype || !t.shape.SequenceEqual(source.Shape))
                    throw new InvalidOperationException($"tensor '{source.Name}' was announced as {source.Dtype} " +
                        $"[{string.Join(", ", source.Shape)}] but loaded as {t.dtype} [{string.Join(", ", t.shape)}]");
                WriteTensorBytes(stream, t);
            }
        });
    }

    private static byte[] BuildHeader(IReadOnlyList<TensorSource> sources, IReadOnlyDictionary<string, string>? metadata)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                json.WriteStartObject(MetadataKey);
                foreach (var (key, value) in metadata.OrderBy(kv => kv.Key, StringComparer.Ordinal))
                    json.WriteString(key, value);
                json.WriteEndObject();
            }
            long offset = 0;
            foreach (var source in sources)
            {
                long length = source.Bytes;
                json.WriteStartObject(source.Name);
                json.WriteString("dtype", SafetensorsDtype.NameOf(source.Dtype));
                json.WriteStartArray("shape");
                foreach (long d in source.Shape) json.WriteNumberValue(d);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(offset + length);
                json.WriteEndArray();
                json.WriteEndObject();
                offset += length;
            }
            json.WriteEndObject();
        }
        // Padding the header with spaces to a multiple of 8 keeps every tensor's data 8-byte aligned for memory maps.
        int padding = (int)((8 - buffer.Length % 8) % 8);
        buffer.Write(Encoding.ASCII.GetBytes(new string(' ', padding)));
        return buffer.ToArray();
    }

    private static void WriteTensorBytes(Stream stream, Tensor t)
    {
        if (TensorMemory.IsDirect(t))
        {
            TensorMemory.WriteTo(stream, t);
            return;
        }
        using var staging = empty(t.shape, t.dtype);
        staging.copy_(t);
        TensorMemory.WriteTo(stream, staging);
    }
}
