using System.Buffers.Binary;
using System.Text.Json;
using System.Text.Unicode;
using Microsoft.Win32.SafeHandles;
using static TorchSharp.torch;

namespace Bflora.Checkpoints;

/// <summary>Where one tensor lives in a safetensors file. <see cref="FileOffset"/> is absolute (header included).</summary>
public sealed record SafetensorsTensorInfo(string Name, ScalarType Dtype, long[] Shape, long FileOffset, long ByteLength)
{
    public long Numel => Shape.Aggregate(1L, (a, b) => a * b);
    public int ElementSize => SafetensorsDtype.SizeOf(Dtype);
}

/// <summary>
/// A validated safetensors file: 8-byte little-endian header length, a JSON header, then the data region.
/// Opening reads and checks only the header; tensor bytes are read on demand straight into tensor memory.
/// </summary>
public sealed class SafetensorsFile
{
    // The reference implementation refuses larger headers too; it also stops a corrupt length from allocating gigabytes.
    private const long MaxHeaderBytes = 100L << 20;

    public string Path { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }
    public IReadOnlyDictionary<string, SafetensorsTensorInfo> Tensors { get; }

    private SafetensorsFile(string path, IReadOnlyDictionary<string, string> metadata,
        IReadOnlyDictionary<string, SafetensorsTensorInfo> tensors)
    {
        Path = path;
        Metadata = metadata;
        Tensors = tensors;
    }

    public static SafetensorsFile Open(string path)
    {
        if (!File.Exists(path)) throw new CheckpointFormatException(path, "file not found");
        using var handle = File.OpenHandle(path);
        long fileSize = RandomAccess.GetLength(handle);
        if (fileSize < 8)
            throw new CheckpointFormatException(path, $"file is {fileSize} bytes, too short for the 8-byte header length");

        Span<byte> lengthBytes = stackalloc byte[8];
        RandomAccess.Read(handle, lengthBytes, 0);
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(lengthBytes);
        if (headerLength > (ulong)(fileSize - 8))
            throw new CheckpointFormatException(path,
                $"header length {headerLength} is larger than the {fileSize - 8} bytes after the length field (truncated or not a safetensors file)");
        if (headerLength > MaxHeaderBytes)
            throw new CheckpointFormatException(path, $"header length {headerLength} exceeds the {MaxHeaderBytes}-byte limit");

        var header = new byte[headerLength];
        RandomAccess.Read(handle, header, 8);
        long dataStart = 8 + (long)headerLength;
        try
        {
            var (metadata, tensors) = ParseHeader(path, header, dataStart, fileSize - dataStart);
            return new SafetensorsFile(path, metadata, tensors);
        }
        catch (InvalidOperationException e)
        {
            // An escaped lone surrogate ("\ud800") passes the parser and fails only when the string is read.
            throw new CheckpointFormatException(path, $"header holds a string that is not valid text ({e.Message})", e);
        }
    }

    private static (Dictionary<string, string>, Dictionary<string, SafetensorsTensorInfo>) ParseHeader(
        string path, byte[] header, long dataStart, long dataLength)
    {
        // JsonDocument checks the UTF-8 of a string only when it is read, and then throws InvalidOperationException.
        if (!Utf8.IsValid(header)) throw new CheckpointFormatException(path, "header is not valid JSON (invalid UTF-8)");
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(header);
        }
        catch (JsonException e)
        {
            throw new CheckpointFormatException(path, $"header is not valid JSON ({e.Message.Split('\n')[0]})", e);
        }

        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new CheckpointFormatException(path, $"header JSON is a {doc.RootElement.ValueKind}, expected an object");

            var metadata = new Dictionary<string, string>();
            var tensors = new Dictionary<string, SafetensorsTensorInfo>();
            foreach (var property in doc.RootElement.EnumerateObject())
            {
                if (property.Name == SafetensorsWriter.MetadataKey)
                {
                    ReadMetadata(path, property.Value, metadata);
                    continue;
                }
                var info = ReadEntry(path, property.Name, property.Value, dataStart, dataLength);
                if (!tensors.TryAdd(info.Name, info))
                    throw new CheckpointFormatException(path, $"tensor '{info.Name}' appears twice in the header");
            }
            CheckNoOverlap(path, tensors.Values, dataStart);
            return (metadata, tensors);
        }
    }

    private static void ReadMetadata(string path, JsonElement value, Dictionary<string, string> metadata)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw new CheckpointFormatException(path, "__metadata__ is not an object of strings");
        foreach (var item in value.EnumerateObject())
        {
            if (item.Value.ValueKind != JsonValueKind.String)
                throw new CheckpointFormatException(path, $"__metadata__ value '{item.Name}' is not a string");
            metadata[item.Name] = item.Value.GetString()!;
        }
    }

    private static SafetensorsTensorInfo ReadEntry(string path, string name, JsonElement entry, long dataStart, long dataLength)
    {
        string Problem(string what) => $"tensor '{name}': {what}";
        if (entry.ValueKind != JsonValueKind.Object)
            throw new CheckpointFormatException(path, Problem("header entry is not an object"));

        if (!entry.TryGetProperty("dtype", out var dtypeValue) || dtypeValue.ValueKind != JsonValueKind.String)
            throw new CheckpointFormatException(path, Problem("missing or non-string 'dtype'"));
        string dtypeName = dtypeValue.GetString()!;
        if (!SafetensorsDtype.TryParse(dtypeName, out var dtype))
            throw new CheckpointFormatException(path,
                Problem($"dtype {dtypeName} is not supported (supported: {string.Join(", ", SafetensorsDtype.Supported)})"));

        long[] shape = ReadNonNegativeInts(path, entry, "shape", Problem);
        long[] offsets = ReadNonNegativeInts(path, entry, "data_offsets", Problem);
        if (offsets.Length != 2)
            throw new CheckpointFormatException(path, Problem($"'data_offsets' has {offsets.Length} values, expected 2"));
        long begin = offsets[0], end = offsets[1];
        if (begin > end)
            throw new CheckpointFormatException(path, Problem($"data_offsets [{begin}, {end}] run backwards"));
        if (end > dataLength)
            throw new CheckpointFormatException(path,
                Problem($"data_offsets end {end} is past the end of the {dataLength}-byte data region (file truncated?)"));

        long expected;
        try
        {
            expected = checked(shape.Aggregate(1L, (a, b) => checked(a * b)) * SafetensorsDtype.SizeOf(dtype));
        }
        catch (OverflowException)
        {
            throw new CheckpointFormatException(path, Problem($"shape [{string.Join(", ", shape)}] is too large"));
        }
        if (end - begin != expected)
            throw new CheckpointFormatException(path, Problem(
                $"data_offsets cover {end - begin} bytes but shape [{string.Join(", ", shape)}] x {dtypeName} needs {expected}"));

        return new SafetensorsTensorInfo(name, dtype, shape, dataStart + begin, end - begin);
    }

    private static long[] ReadNonNegativeInts(string path, JsonElement entry, string key, Func<string, string> problem)
    {
        if (!entry.TryGetProperty(key, out var array) || array.ValueKind != JsonValueKind.Array)
            throw new CheckpointFormatException(path, problem($"missing or non-array '{key}'"));
        var values = new long[array.GetArrayLength()];
        int i = 0;
        foreach (var item in array.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt64(out long v) || v < 0)
                throw new CheckpointFormatException(path, problem($"'{key}' holds {item.GetRawText()}, expected non-negative integers"));
            values[i++] = v;
        }
        return values;
    }

    private static void CheckNoOverlap(string path, IEnumerable<SafetensorsTensorInfo> tensors, long dataStart)
    {
        SafetensorsTensorInfo? previous = null;
        foreach (var t in tensors.Where(t => t.ByteLength > 0).OrderBy(t => t.FileOffset))
        {
            if (previous is not null && t.FileOffset < previous.FileOffset + previous.ByteLength)
                throw new CheckpointFormatException(path,
                    $"tensors '{previous.Name}' and '{t.Name}' overlap (bytes {previous.FileOffset - dataStart}..{previous.FileOffset - dataStart + previous.ByteLength} and {t.FileOffset - dataStart}..{t.FileOffset - dataStart + t.ByteLength} of the data region)");
            previous = t;
        }
    }

    public SafetensorsTensorInfo Info(string name) =>
        Tensors.TryGetValue(name, out var info)
            ? info
            : throw new CheckpointFormatException(Path, $"no tensor named '{name}'");

    /// <summary>Reads a whole tensor into <paramref name="target"/>, which must have its shape; any float dtype is converted.</summary>
    public void Read(string name, Tensor target)
    {
        var info = Info(name);
        if (!target.shape.SequenceEqual(info.Shape))
            throw new ArgumentException(
                $"{Path}: tensor '{name}' has shape [{string.Join(", ", info.Shape)}], target has [{string.Join(", ", target.shape)}]");
        ReadBytes(info, info.FileOffset, target);
    }

    /// <summary>
    /// Reads elements [start, start+count) of the flattened tensor into <paramref name="target"/> (count elements),
    /// touching only those bytes of the file.
    /// </summary>
    public void ReadFlatSlice(string name, long start, long count, Tensor target)
    {
        var info = Info(name);
        if (start < 0 || count < 0 || start + count > info.Numel)
            throw new ArgumentOutOfRangeException(nameof(start),
                $"{Path}: slice [{start}, {start + count}) is outside tensor '{name}' of {info.Numel} elements");
        if (target.numel() != count)
            throw new ArgumentException($"{Path}: slice of {count} elements of '{name}' does not fit a target of {target.numel()}");
        ReadBytes(info, info.FileOffset + start * info.ElementSize, target);
    }

    /// <summary>Allocates a new CPU tensor (the file's dtype unless <paramref name="dtype"/> is given) and reads into it.</summary>
    public Tensor Load(string name, ScalarType? dtype = null)
    {
        var info = Info(name);
        var result = empty(info.Shape, dtype ?? info.Dtype);
        Read(name, result);
        return result;
    }

    private void ReadBytes(SafetensorsTensorInfo info, long fileOffset, Tensor target)
    {
        using var handle = File.OpenHandle(Path);
        if (target.dtype == info.Dtype && TensorMemory.IsDirect(target))
        {
            TensorMemory.ReadInto(handle, Path, fileOffset, target);
            return;
        }
        using var staging = empty(target.shape, info.Dtype);
        TensorMemory.ReadInto(handle, Path, fileOffset, staging);
        // Loading is not a step autograd should see, and a parameter that requires grad refuses in-place copies otherwise.
        using var noGrad = no_grad();
        target.copy_(staging);
    }
}
