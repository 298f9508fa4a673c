using System.Text;
using System.Text.Json;
using Bflora.Checkpoints;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Bflora.Tests.Checkpoints;

public class SafetensorsRoundTripTests
{
    [Fact]
    public void EveryDtypeMetadataScalarAndEmptyTensorSurviveARoundTrip()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempFolder();
        var tensors = new Dictionary<string, Tensor>
        {
            ["b.bf16"] = randn(3, 5).bfloat16(),
            ["a.f16"] = randn(4).half(),
            ["c.f32"] = randn(2, 3, 4),
            ["scalar"] = tensor(3.25f),
            ["empty"] = zeros(0, 3, dtype: ScalarType.BFloat16),
        };
        var metadata = new Dictionary<string, string> { ["format"] = "pt", ["note"] = "ünïcode ok" };
        string path = dir.File("t.safetensors");

        SafetensorsWriter.Write(path, tensors, metadata);
        var file = SafetensorsFile.Open(path);

        Assert.Equal(metadata, file.Metadata);
        Assert.Equal(tensors.Keys.Order(), file.Tensors.Keys.Order());
        foreach (var (name, expected) in tensors)
        {
            var info = file.Tensors[name];
            Assert.Equal(expected.dtype, info.Dtype);
            Assert.Equal(expected.shape, info.Shape);
            var loaded = file.Load(name);
            Assert.Equal(expected.shape, loaded.shape);
            TensorAssert.Identical(expected, loaded, name);
        }
        Assert.Single(Directory.GetFiles(dir.Path));
    }

    [Fact]
    public void HeaderIsSortedAndPaddedToEightBytes()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempFolder();
        string path = dir.File("t.safetensors");
        SafetensorsWriter.Write(path, new Dictionary<string, Tensor> { ["zeta"] = ones(3), ["alpha"] = ones(5), ["mid"] = ones(1) });

        byte[] bytes = File.ReadAllBytes(path);
        long headerLength = BitConverter.ToInt64(bytes, 0);
        Assert.Equal(0, (8 + headerLength) % 8);
        string header = Encoding.UTF8.GetString(bytes, 8, (int)headerLength);
        using var doc = JsonDocument.Parse(header);
        Assert.Equal(["alpha", "mid", "zeta"], doc.RootElement.EnumerateObject().Select(p => p.Name));
        Assert.Equal(0, doc.RootElement.GetProperty("alpha").GetProperty("data_offsets")[0].GetInt64());
        Assert.Equal(20, doc.RootElement.GetProperty("mid").GetProperty("data_offsets")[0].GetInt64());
        Assert.Equal(8 + headerLength + 9 * 4, bytes.Length);

        Assert.Throws<ArgumentException>(() =>
            SafetensorsWriter.Write(path, new Dictionary<string, Tensor> { ["__metadata__"] = ones(1) }));
    }

    [Fact]
    public void BytesMatchTheReferenceLayout()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempFolder();
        string path = dir.File("t.safetensors");
        SafetensorsWriter.Write(path, new Dictionary<string, Tensor> { ["a"] = tensor(new[] { 1.0f, 2.0f }) },
            new Dictionary<string, string> { ["format"] = "pt" });

        const string json = """{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""";
        string padded = json + new string(' ', (8 - json.Length % 8) % 8);
        byte[] expected = [.. BitConverter.GetBytes((ulong)padded.Length), .. Encoding.ASCII.GetBytes(padded),
            .. BitConverter.GetBytes(1.0f), .. BitConverter.GetBytes(2.0f)];
        Assert.Equal(expected, File.ReadAllBytes(path));
    }

    [Fact]
    public void FlatSliceReadEqualsTheSliceOfTheFullTensor()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempFolder();
        string path = dir.File("t.safetensors");
        var full = randn(4, 6).bfloat16();
        SafetensorsWriter.Write(path, new Dictionary<string, Tensor> { ["w"] = full });
        var file = SafetensorsFile.Open(path);

        var slice = empty(7, dtype: ScalarType.BFloat16);
        file.ReadFlatSlice("w", 5, 7, slice);
        TensorAssert.Identical(full.flatten()[TensorIndex.Slice(5, 12)], slice);

        var converted = empty(3, dtype: ScalarType.Float32);
        file.ReadFlatSlice("w", 21, 3, converted);
        TensorAssert.Identical(full.flatten()[TensorIndex.Slice(21, 24)].@float(), converted);

        Assert.Throws<ArgumentOutOfRangeException>(() => file.ReadFlatSlice("w", 20, 5, empty(5, dtype: ScalarType.BFloat16)));
    }

    [Fact]
    public void ReadConvertsDtypeAndFillsNonContiguousTargets()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempFolder();
        string path = dir.File("t.safetensors");
        var full = randn(4, 6);
        SafetensorsWriter.Write(path, new Dictionary<string, Tensor> { ["w"] = full, ["h"] = full.half() });
        var file = SafetensorsFile.Open(path);

        var bf16 = empty(4, 6, dtype: ScalarType.BFloat16);
        file.Read("w", bf16);
        TensorAssert.Identical(full.bfloat16(), bf16);

        var widened = file.Load("h", ScalarType.Float32);
        TensorAssert.Identical(full.half().@float(), widened);

        var transposed = zeros(6, 4).t();
        Assert.False(transposed.is_contiguous());
        file.Read("w", transposed);
        TensorAssert.Identical(full, transposed);

        Assert.Throws<ArgumentException>(() => file.Read("w", empty(6, 4)));
    }

    [Fact]
    public void NonContiguousSourcesAreWrittenInLogicalOrder()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempFolder();
        string path = dir.File("t.safetensors");
        var source = arange(12, dtype: ScalarType.Float32).reshape(3, 4).t();
        SafetensorsWriter.Write(path, new Dictionary<string, Tensor> { ["t"] = source });
        TensorAssert.Identical(source, SafetensorsFile.Open(path).Load("t"));
    }
}
