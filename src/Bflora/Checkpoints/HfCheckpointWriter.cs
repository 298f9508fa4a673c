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
        IReadOnlyDictionary<string, string>? metadata = null, long? maxShardBytes = null) =>
        Write(folder, TensorSource.Of(tensors), metadata, maxShardBytes);

    /// <summary>The same from sources, each loaded only while its shard is written (see <see cref="TensorSource"/>).</summary>
    public static void Write(string folder, IReadOnlyList<TensorSource> sources,
        IReadOnlyDictionary<string, string>? metadata = null, long? maxShardBytes = null)
    {
        if (maxShardBytes is <= 0) throw new ArgumentOutOfRangeException(nameof(maxShardBytes), "must be positive");
        Directory.CreateDirectory(folder);
        long totalBytes = sources.Sum(s => s.Bytes);
        if (maxShardBytes is null || totalBytes <= maxShardBytes)
        {
            SafetensorsWriter.Write(Path.Combine(folder, HfCheckpoint.SingleFileName), sources, metadata);
            // Readers prefer an index, so one left from an earlier sharded write would hide the new file.
            File.Delete(Path.Combine(folder, HfCheckpoint.IndexFileName));
            return;
        }

        var shards = SplitIntoShards(sources, maxShardBytes.Value);
        WriteShards(folder, shards, shards.Count, metadata);
    }

    /// <summary>
    /// Writes <paramref name="count"/> given shards, each taken from <paramref name="shards"/> only when the one before
    /// is on disk (a sharded trainer gathers a unit per shard), then the index that maps them.
    /// </summary>
    public static void WriteShards(string folder, IEnumerable<IReadOnlyList<TensorSource>> shards, int count,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        Directory.CreateDirectory(folder);
        var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
        long totalBytes = 0;
        int i = 0;
        foreach (var shard in shards)
        {
            if (i == count) throw new ArgumentException($"more than the {count} shards announced", nameof(shards));
            string shardName = $"model-{i + 1:D5}-of-{count:D5}.safetensors";
            SafetensorsWriter.Write(Path.Combine(folder, shardName), shard, metadata);
            foreach (var source in shard) weightMap[source.Name] = shardName;
            totalBytes += shard.Sum(source => source.Bytes);
            i++;
        }
        if (i != count) throw new ArgumentException($"{i} shards, {count} announced", nameof(shards));
        // The index goes last: a reader that finds it can rely on every shard it names being complete.
        WriteIndex(Path.Combine(folder, HfCheckpoint.IndexFileName), totalBytes, weightMap);
        File.Delete(Path.Combine(folder, HfCheckpoint.SingleFileName));
    }

    private static List<List<TensorSource>> SplitIntoShards(IReadOnlyList<TensorSource> sources, long maxShardBytes)
    {
        var shards = new List<List<TensorSource>>();
        var current = new List<TensorSource>();
        long currentBytes = 0;
        foreach (var source in sources.OrderBy(s => s.Name, StringComparer.Ordinal))
        {
            if (current.Count > 0 && currentBytes + source.Bytes > maxShardBytes)
            {
                shards.Add(current);
                current = [];
                currentBytes = 0;
            }
            current.Add(source);
            currentBytes += source.Bytes;
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
