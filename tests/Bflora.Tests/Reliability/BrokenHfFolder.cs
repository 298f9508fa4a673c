using System.Buffers.Binary;
using System.Text;
using System.Text.Json.Nodes;
using Bflora.Checkpoints;
using Bflora.Config;
using Bflora.Models;
using static TorchSharp.torch;

namespace Bflora.Tests.Reliability;

/// <summary>
/// A valid debug-size Llama model in HF layout (written with LlamaHfCheckpoint.Export from the debug config's random
/// init), copied into a fresh folder per case so each test can break its own copy in one specific way.
/// </summary>
public sealed class BrokenHfFolder : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("bflora-broken-").FullName;

    public BrokenHfFolder()
    {
        var config = BfloraConfig.Load(RepoPaths.Of("configs", "debug.toml"));
        var spec = ModelBuilder.Resolve(config);
        using var scope = NewDisposeScope();
        using var model = ModelBuilder.Build(config, spec.Args, null);
        var tensors = model.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter.detach());
        LlamaHfCheckpoint.Export(Valid, tensors, spec.Args, spec.Tokenizer.BosId, spec.Tokenizer.EosId);
    }

    public string Valid => Path.Combine(_root, "valid");

    /// <summary>A fresh copy of the valid folder.</summary>
    public string Copy()
    {
        string copy = Path.Combine(_root, Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(copy);
        foreach (string file in Directory.GetFiles(Valid)) File.Copy(file, Path.Combine(copy, Path.GetFileName(file)));
        return copy;
    }

    public static string Weights(string folder) => Path.Combine(folder, HfCheckpoint.SingleFileName);

    /// <summary>Rewrites the safetensors header of <paramref name="file"/> through <paramref name="edit"/>, keeping the data bytes.</summary>
    public static void EditHeader(string file, Action<JsonObject> edit)
    {
        byte[] bytes = File.ReadAllBytes(file);
        int length = checked((int)BinaryPrimitives.ReadUInt64LittleEndian(bytes));
        var header = JsonNode.Parse(Encoding.UTF8.GetString(bytes, 8, length))!.AsObject();
        edit(header);
        byte[] json = Encoding.UTF8.GetBytes(header.ToJsonString());
        var output = new byte[8 + json.Length + bytes.Length - 8 - length];
        BinaryPrimitives.WriteUInt64LittleEndian(output, (ulong)json.Length);
        json.CopyTo(output, 8);
        Array.Copy(bytes, 8 + length, output, 8 + json.Length, bytes.Length - 8 - length);
        File.WriteAllBytes(file, output);
    }

    /// <summary>Rewrites model.safetensors with its tensors passed through <paramref name="edit"/> (which may drop or replace some).</summary>
    public static void EditTensors(string folder, Action<Dictionary<string, Tensor>> edit)
    {
        using var scope = NewDisposeScope();
        var checkpoint = HfCheckpoint.Open(folder);
        var tensors = checkpoint.Tensors.Keys.ToDictionary(name => name, name => checkpoint.Load(name));
        edit(tensors);
        SafetensorsWriter.Write(Weights(folder), tensors);
    }

    public static void EditConfig(string folder, Action<JsonObject> edit)
    {
        string path = Path.Combine(folder, HfConfig.FileName);
        var json = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        edit(json);
        File.WriteAllText(path, json.ToJsonString());
    }

    public void Dispose()
    {
        try { Directory.Delete(_root, recursive: true); }
        catch (IOException) { /* a leftover temp folder must not fail a test */ }
    }
}
