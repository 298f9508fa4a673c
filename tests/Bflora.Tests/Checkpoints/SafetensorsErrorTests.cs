using System.Text;
using Bflora.Checkpoints;
using Xunit;
using static TorchSharp.torch;

namespace Bflora.Tests.Checkpoints;

public class SafetensorsErrorTests
{
    private static string WriteRaw(TempFolder dir, string header, int dataBytes, ulong? declaredLength = null)
    {
        string path = dir.File("bad.safetensors");
        byte[] json = Encoding.UTF8.GetBytes(header);
        using var stream = File.Create(path);
        stream.Write(BitConverter.GetBytes(declaredLength ?? (ulong)json.Length));
        stream.Write(json);
        stream.Write(new byte[dataBytes]);
        return path;
    }

    private static string OpenFails(string path)
    {
        var e = Assert.Throws<CheckpointFormatException>(() => SafetensorsFile.Open(path));
        Assert.StartsWith(path + ": ", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        return e.Message;
    }

    [Fact]
    public void TruncatedFileIsReported()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempFolder();
        string path = dir.File("bad.safetensors");
        SafetensorsWriter.Write(path, new Dictionary<string, Tensor> { ["a"] = ones(4), ["b"] = ones(8) });
        using (var stream = new FileStream(path, FileMode.Open)) stream.SetLength(stream.Length - 3);

        string message = OpenFails(path);
        Assert.Contains("tensor 'b'", message);
        Assert.Contains("past the end", message);
    }

    [Fact]
    public void OffsetPastTheEndIsReported()
    {
        using var dir = new TempFolder();
        string path = WriteRaw(dir, """{"w":{"dtype":"F32","shape":[4],"data_offsets":[100,116]}}""", 16);
        string message = OpenFails(path);
        Assert.Contains("tensor 'w'", message);
        Assert.Contains("end 116 is past the end of the 16-byte data region", message);
    }

    [Fact]
    public void HeaderLongerThanTheFileIsReported()
    {
        using var dir = new TempFolder();
        string path = WriteRaw(dir, "{}", 0, declaredLength: 1000);
        Assert.Contains("header length 1000 is larger than the 2 bytes", OpenFails(path));
    }

    [Fact]
    public void FileShorterThanTheLengthFieldIsReported()
    {
        using var dir = new TempFolder();
        string path = dir.File("bad.safetensors");
        File.WriteAllBytes(path, [1, 2, 3]);
        Assert.Contains("too short", OpenFails(path));
    }

    [Fact]
    public void MalformedJsonHeaderIsReported()
    {
        using var dir = new TempFolder();
        string path = WriteRaw(dir, """{"w": {"dtype": "F32", """, 0);
        Assert.Contains("header is not valid JSON", OpenFails(path));
    }

    [Fact]
    public void HeaderThatIsNotUtf8IsReported()
    {
        using var dir = new TempFolder();
        string path = dir.File("bad.safetensors");
        File.WriteAllBytes(path, [.. BitConverter.GetBytes(4UL), 0xFF, 0xFE, 0x00, 0x7B]);
        Assert.Contains("header is not valid JSON", OpenFails(path));
    }

    [Fact]
    public void NonObjectHeaderIsReported()
    {
        using var dir = new TempFolder();
        Assert.Contains("expected an object", OpenFails(WriteRaw(dir, "[1, 2]", 0)));
    }

    [Fact]
    public void UnsupportedDtypeNamesTheTensorAndDtype()
    {
        using var dir = new TempFolder();
        string path = WriteRaw(dir, """{"ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}""", 16);
        string message = OpenFails(path);
        Assert.Contains("tensor 'ids'", message);
        Assert.Contains("dtype I64 is not supported", message);
        Assert.Contains("BF16, F16, F32", message);
    }

    [Fact]
    public void OverlappingRangesAreReported()
    {
        using var dir = new TempFolder();
        string path = WriteRaw(dir,
            """{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}""", 24);
        string message = OpenFails(path);
        Assert.Contains("'a' and 'b' overlap", message);
    }

    [Fact]
    public void ByteLengthThatDisagreesWithTheShapeIsReported()
    {
        using var dir = new TempFolder();
        string path = WriteRaw(dir, """{"a":{"dtype":"BF16","shape":[3],"data_offsets":[0,8]}}""", 8);
        Assert.Contains("cover 8 bytes but shape [3] x BF16 needs 6", OpenFails(path));
    }

    [Fact]
    public void MetadataMustHoldStringsAndOffsetsMustRunForward()
    {
        using var dir = new TempFolder();
        Assert.Contains("__metadata__ value 'n' is not a string",
            OpenFails(WriteRaw(dir, """{"__metadata__":{"n":1}}""", 0)));
        Assert.Contains("run backwards",
            OpenFails(WriteRaw(dir, """{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}""", 8)));
        Assert.Contains("'shape' holds -1",
            OpenFails(WriteRaw(dir, """{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}}""", 0)));
    }

    [Fact]
    public void UnknownTensorNameIsReported()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempFolder();
        string path = dir.File("ok.safetensors");
        SafetensorsWriter.Write(path, new Dictionary<string, Tensor> { ["a"] = ones(2) });
        var e = Assert.Throws<CheckpointFormatException>(() => SafetensorsFile.Open(path).Load("nope"));
        Assert.Contains("no tensor named 'nope'", e.Message);
    }
}
