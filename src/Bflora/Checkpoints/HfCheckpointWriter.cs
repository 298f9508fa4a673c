using System.Text.Json;
using static TorchSharp.torch;

namespace Bflora.Checkpoints;

/// <summary>Writes a Hugging Face checkpoint folder: one <c>model.safetensors</c>, or shards plus an index.</summary>
public static class HfCheckpointWriter
{
    /// <summary>
    /// Writes <paramref name="tensors"/> into <paramref name="folder"/>. With <paramref name="maxShardBytes"/> and more
    /// data than that, tensors go in name order into <c>model-0000i-of-0000n.safetensors</c> shards of at most that
    /// many data bytes (a larger tensor gets a shard of its own) and <c>model.safetensors.index.json</c> maps them.
    /// </summary>
    public static void Write(string folder, IReadOnlyDictionary<string, Tensor> tensors,
        IReadOnlyDictionary<string, string>? metadata = null, long? maxShardBytes = null)
    {
        if (maxShardBytes is <= 0) throw new ArgumentOutOfRangeException(nameof(maxShardBytes), "must be positive");
        Directory.CreateDirectory(folder);
        long totalBytes = tensors.Values.Sum(SafetensorsWriter.DataBytes);
        if (maxShardBytes is null || totalBytes <= maxShardBytes)
        {
            SafetensorsWriter.Write(Path.Combine(folder, HfCheckpoint.SingleFileName), tensors, metadata);
            // Readers prefer an index, so one left from an earlier sharded write would hide the new file.
            File.Delete(Path.Combine(folder, HfCheckpoint.IndexFileName));
            return;
        }

        var shards = SplitIntoShards(tensors, maxShardBytes.Value);
        var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
        for (int i = 0; i < shards.Count; i++)
        {
            string shardName = $"model-{i + 1:D5}-of-{shards.Count:D5}.safetensors";
            var shardTensors = shards[i].ToDictionary(name => name, name => tensors[name]);
            SafetensorsWriter.Write(Path.Combine(folder, shardName), shardTensors, metadata);
            foreach (var name in shards[i]) weightMap[name] = shardName;
        }
        // The index goes last: a reader that finds it can rely on every shard it names being complete.
        WriteIndex(Path.Combine(folder, HfCheckpoint.IndexFileName), totalBytes, weightMap);
        File.Delete(Path.Combine(folder, HfCheckpoint.SingleFileName));
    }

    private static List<List<string>> SplitIntoShards(IReadOnlyDictionary<string, Tensor> tensors, long maxShardBytes)
    {
        var shards = new List<List<string>>();
        var current = new List<string>();
        long currentBytes = 0;
        foreach (var name in tensors.Keys.Order(StringComparer.Ordinal))
        {
            long bytes = SafetensorsWriter.DataBytes(tensors[name]);
            if (current.Count > 0 && currentBytes + bytes > maxShardBytes)
            {
                shards.Add(current);
                current = [];
                currentBytes = 0;
            }
            current.Add(name);
            currentBytes += bytes;
        }
        if (current.Count > 0) shards.Add(current);
        return shards;
    }

    private static void WriteIndex(string path, long totalBytes, IReadOnlyDictionary<string, string> weightMap)
    {
        AtomicFile.Write(path, stream =>
        {
            using var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
            json.WriteStartObject();
            json.WriteStartObject("metadata");
            json.WriteNumber("total_size", totalBytes);
            json.WriteEndObject();
            json.WriteStartObject("weight_map");
            foreach (var (name, shard) in weightMap) json.WriteString(name, shard);
            json.WriteEndObject();
            json.WriteEndObject();
        });
    }
}
