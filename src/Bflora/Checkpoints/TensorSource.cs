using static TorchSharp.torch;

namespace Bflora.Checkpoints;

/// <summary>
/// A tensor to be written, known by name, dtype and shape before its values exist. Writers lay out headers and
/// shards from these and call <see cref="Load"/> only when its bytes go to disk, disposing what it returns, so a
/// model is written one tensor at a time rather than held whole.
/// </summary>
public sealed record TensorSource(string Name, ScalarType Dtype, long[] Shape, Func<Tensor> Load)
{
    public long Bytes => Shape.Aggregate(1L, (a, b) => a * b) * SafetensorsDtype.SizeOf(Dtype);

    /// <summary>A tensor that exists already; Load hands out an alias, so the writer's dispose leaves it alone.</summary>
    public static TensorSource Of(string name, Tensor t) => new(name, t.dtype, t.shape, t.alias);

    public static IReadOnlyList<TensorSource> Of(IReadOnlyDictionary<string, Tensor> tensors) =>
        tensors.Select(kv => Of(kv.Key, kv.Value)).ToList();
}
