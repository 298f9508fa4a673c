using System.Text.Json;
using static TorchSharp.torch;

namespace Bflora.Checkpoints;

/// <summary>One tensor of a Hugging Face checkpoint folder and the shard file that holds it.</summary>
public sealed record CheckpointTensor(string Name, string File, ScalarType Dtype, long[] Shape)
{
    public long Numel => Shape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>
/// A Hugging Face safetensors checkpoint: a folder with <c>model.safetensors</c>, or with
/// <c>model.safetensors.index.json</c> whose <c>weight_map</c> names the shard holding each tensor (a single
/// .safetensors file path works too). Only headers are read on open; tensors are read by name on demand.
/// </summary>
public sealed class HfCheckpoint
{
    public const string SingleFileName = "model.safetensors";
    public const string IndexFileName = "model.safetensors.index.json";

    private readonly Dictionary<string, SafetensorsFile> _fileOf;

    public string Location { get; }
    public IReadOnlyDictionary<string, CheckpointTensor> Tensors { get; }

    private HfCheckpoint(string location, Dictionary<string, SafetensorsFile> fileOf)
    {
        Location = location;
        _fileOf = fileOf;
        Tensors = fileOf.ToDictionary(kv => kv.Key, kv =>
        {
            var info = kv.Value.Tensors[kv.Key];
            return new CheckpointTensor(kv.Key, kv.Value.Path, info.Dtype, info.Shape);
        });
    }

    public static HfCheckpoint Open(string folderOrFile)
    {
        if (File.Exists(folderOrFile)) return FromFiles(folderOrFile, [SafetensorsFile.Open(folderOrFile)]);
        if (!Directory.Exists(folderOrFile))
            throw new CheckpointFormatException(folderOrFile, "no such checkpoint file or folder");

        string index = Path.Combine(folderOrFile, IndexFileName);
        if (File.Exists(index)) return FromIndex(folderOrFile, index);
        string single = Path.Combine(folderOrFile, SingleFileName);
        if (File.Exists(single)) return FromFiles(folderOrFile, [SafetensorsFile.Open(single)]);
        throw new CheckpointFormatException(folderOrFile, $"folder has neither {SingleFileName} nor {IndexFileName}");
    }

    private static HfCheckpoint FromFiles(string location, IEnumerable<SafetensorsFile> files)
    {
        var fileOf = new Dictionary<string, SafetensorsFile>();
        foreach (var file in files)
            foreach (var name in file.Tensors.Keys)
                if (!fileOf.TryAdd(name, file))
                    throw new CheckpointFormatException(location, $"tensor '{name}' is in both {fileOf[name].Path} and {file.Path}");
        return new HfCheckpoint(location, fileOf);
    }

    private static HfCheckpoint FromIndex(string folder, string indexPath)
    {
        var weightMap = ReadWeightMap(indexPath);
        var shards = new Dictionary<string, SafetensorsFile>();
        var fileOf = new Dictionary<string, SafetensorsFile>();
        foreach (var (name, shardName) in weightMap)
        {
            if (!shards.TryGetValue(shardName, out var shard))
            {
                string shardPath = Path.Combine(folder, shardName);
                if (!File.Exists(shardPath))
                    throw new CheckpointFormatException(indexPath, $"shard '{shardName}' (holding '{name}') does not exist");
                shard = SafetensorsFile.Open(shardPath);
                shards.Add(shardName, shard);
            }
            if (!shard.Tensors.ContainsKey(name))
                throw new CheckpointFormatException(indexPath, $"weight_map puts '{name}' in '{shardName}', which does not hold it");
            fileOf.Add(name, shard);
        }
        return new HfCheckpoint(folder, fileOf);
    }

    private static Dictionary<string, string> ReadWeightMap(string indexPath)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(indexPath));
            if (doc.RootElement.ValueKind != JsonValueKind.Object
                || !doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
                throw new CheckpointFormatException(indexPath, "no 'weight_map' object");
            var result = new Dictionary<string, string>();
            foreach (var entry in map.EnumerateObject())
            {
                string? shard = entry.Value.ValueKind == JsonValueKind.String ? entry.Value.GetString() : null;
                // A shard name is a plain file name; anything with a path part could read outside the folder.
                if (string.IsNullOrEmpty(shard) || shard != Path.GetFileName(shard))
                    throw new CheckpointFormatException(indexPath, $"weight_map entry '{entry.Name}' is not a shard file name");
                result[entry.Name] = shard;
            }
            return result;
        }
        catch (JsonException e)
        {
            throw new CheckpointFormatException(indexPath, $"not valid JSON ({e.Message.Split('\n')[0]})", e);
        }
        catch (InvalidOperationException e)
        {
            // Invalid UTF-8 or an escaped lone surrogate in a string passes the parser and fails only when it is read.
            throw new CheckpointFormatException(indexPath, $"holds a string that is not valid text ({e.Message})", e);
        }
    }

    public CheckpointTensor Info(string name) =>
        Tensors.TryGetValue(name, out var info)
            ? info
            : throw new CheckpointFormatException(Location, $"checkpoint has no tensor named '{name}' ({Tensors.Count} tensors)");

    /// <summary>Reads a whole tensor into <paramref name="target"/> of its shape; the dtype is converted if needed.</summary>
    public void Read(string name, Tensor target)
    {
        Info(name);
        _fileOf[name].Read(name, target);
    }

    /// <summary>Reads elements [start, start+count) of the flattened tensor into <paramref name="target"/>.</summary>
    public void ReadFlatSlice(string name, long start, long count, Tensor target)
    {
        Info(name);
        _fileOf[name].ReadFlatSlice(name, start, count, target);
    }

    /// <summary>Allocates a CPU tensor (the file's dtype unless <paramref name="dtype"/> is given) and reads into it.</summary>
    public Tensor Load(string name, ScalarType? dtype = null)
    {
        Info(name);
        return _fileOf[name].Load(name, dtype);
    }
}
