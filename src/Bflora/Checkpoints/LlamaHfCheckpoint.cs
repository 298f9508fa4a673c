using Bflora.Models.Llama3;
using static TorchSharp.torch;

namespace Bflora.Checkpoints;

/// <summary>
/// A Hugging Face Llama checkpoint seen through torchtitan names and layout: q/k weights come out with their rows
/// un-permuted, so whole reads and flat-slice reads both address the torchtitan layout the model (and the bitflip
/// index) uses, while only the needed bytes of the files are read.
/// </summary>
public sealed class LlamaHfCheckpoint
{
    private readonly Dictionary<string, string> _hfKeyOf;

    public HfCheckpoint Source { get; }
    public ModelArgs Args { get; }

    /// <summary>Loadable tensors by torchtitan name; <see cref="CheckpointTensor.Name"/> is the HF key.</summary>
    public IReadOnlyDictionary<string, CheckpointTensor> Tensors { get; }

    private LlamaHfCheckpoint(HfCheckpoint source, ModelArgs args)
    {
        Source = source;
        Args = args;
        _hfKeyOf = new Dictionary<string, string>();
        foreach (var hfKey in source.Tensors.Keys)
            if (LlamaKeyMap.HfToTitan(hfKey) is { } titanKey)
                _hfKeyOf.Add(titanKey, hfKey);
        Tensors = _hfKeyOf.ToDictionary(kv => kv.Key, kv => source.Tensors[kv.Value]);
    }

    /// <summary>Opens the checkpoint in <paramref name="folder"/>; <paramref name="args"/> gives the head counts of q and k.</summary>
    public static LlamaHfCheckpoint Open(string folder, ModelArgs args) => new(HfCheckpoint.Open(folder), args);

    public CheckpointTensor Info(string titanKey) =>
        Tensors.TryGetValue(titanKey, out var info)
            ? info
            : throw new CheckpointFormatException(Source.Location,
                $"checkpoint has no tensor for '{titanKey}' (HF name '{LlamaKeyMap.TitanToHf(titanKey)}')");

    /// <summary>Reads a whole tensor, in torchtitan layout, into <paramref name="target"/> of its shape.</summary>
    public void Read(string titanKey, Tensor target)
    {
        var info = Info(titanKey);
        if (LlamaKeyMap.PermutedHeads(titanKey, Args) is not { } heads)
        {
            Source.Read(info.Name, target);
            return;
        }
        using var hfRows = empty(info.Shape, info.Dtype);
        Source.Read(info.Name, hfRows);
        using var titanRows = LlamaKeyMap.HfToTitanRows(hfRows, heads);
        using var noGrad = no_grad();
        target.copy_(titanRows);
    }

    /// <summary>
    /// Reads elements [start, start+count) of the flattened torchtitan-layout tensor into <paramref name="target"/>.
    /// For q/k weights each torchtitan row is read from the HF row it comes from.
    /// </summary>
    public void ReadFlatSlice(string titanKey, long start, long count, Tensor target)
    {
        var info = Info(titanKey);
        if (LlamaKeyMap.PermutedHeads(titanKey, Args) is not { } heads)
        {
            Source.ReadFlatSlice(info.Name, start, count, target);
            return;
        }
        if (start < 0 || count < 0 || start + count > info.Numel)
            throw new ArgumentOutOfRangeException(nameof(start),
                $"slice [{start}, {start + count}) is outside '{titanKey}' of {info.Numel} elements");
        if (target.numel() != count)
            throw new ArgumentException($"slice of {count} elements of '{titanKey}' does not fit a target of {target.numel()}");

        long cols = info.Shape[1];
        int headDim = (int)(info.Shape[0] / heads);
        bool direct = target.is_contiguous();
        using var flat = direct ? target.view(-1) : empty(count, target.dtype);
        for (long pos = start; pos < start + count;)
        {
            long row = pos / cols, col = pos % cols;
            long length = Math.Min(cols - col, start + count - pos);
            using var part = flat.narrow(0, pos - start, length);
            Source.ReadFlatSlice(info.Name, LlamaKeyMap.HfRowOf(row, headDim) * cols + col, length, part);
            pos += length;
        }
        if (!direct)
        {
            using var noGrad = no_grad();
            using var shaped = flat.view(target.shape);
            target.copy_(shaped);
        }
    }

    /// <summary>
    /// Writes torchtitan-named tensors as an HF Llama folder: safetensors with HF names and q/k rows permuted back,
    /// plus config.json.
    /// </summary>
    public static void Export(string folder, IReadOnlyDictionary<string, Tensor> titanTensors, ModelArgs args,
        int bosTokenId, int eosTokenId, long? maxShardBytes = null) =>
        Export(folder, TensorSource.Of(titanTensors), args, bosTokenId, eosTokenId, maxShardBytes);

    /// <summary>The same from torchtitan-named sources, each loaded (and its rows permuted) only when it is written.</summary>
    public static void Export(string folder, IReadOnlyList<TensorSource> titanSources, ModelArgs args,
        int bosTokenId, int eosTokenId, long? maxShardBytes = null)
    {
        HfCheckpointWriter.Write(folder, ToHf(titanSources, args), Metadata, maxShardBytes);
        HfConfig.Write(Path.Combine(folder, HfConfig.FileName), args, bosTokenId, eosTokenId);
    }

    /// <summary>The same with the shards given: each of the <paramref name="count"/> is written before the next is taken.</summary>
    public static void ExportShards(string folder, IEnumerable<IReadOnlyList<TensorSource>> titanShards, int count,
        ModelArgs args, int bosTokenId, int eosTokenId)
    {
        HfCheckpointWriter.WriteShards(folder, titanShards.Select(shard => ToHf(shard, args)), count, Metadata);
        HfConfig.Write(Path.Combine(folder, HfConfig.FileName), args, bosTokenId, eosTokenId);
    }

    private static readonly Dictionary<string, string> Metadata = new() { ["format"] = "pt" };

    /// <summary>HF names, and q/k rows permuted back to HF order as each tensor is loaded.</summary>
    private static IReadOnlyList<TensorSource> ToHf(IReadOnlyList<TensorSource> titanSources, ModelArgs args) =>
        titanSources.Select(s => LlamaKeyMap.PermutedHeads(s.Name, args) is { } heads
                ? new TensorSource(LlamaKeyMap.TitanToHf(s.Name), s.Dtype, s.Shape, () =>
                {
                    using var titanRows = s.Load();
                    return LlamaKeyMap.TitanToHfRows(titanRows, heads);
                })
                : s with { Name = LlamaKeyMap.TitanToHf(s.Name) })
            .ToList();
}
