using TorchSharp;
using static TorchSharp.torch;

namespace Bflora.Models.Llama3;

/// <summary>
/// Creates every Linear of the model, by its fully qualified name. The default makes plain bias-free Linears; the
/// bitflip converter and the sharding wrapper substitute their own modules without the model knowing.
/// </summary>
public delegate nn.Module<Tensor, Tensor> LinearFactory(string name, long inFeatures, long outFeatures);

/// <summary>A module that owns named Linear slots which can be swapped after construction.</summary>
public abstract class LinearHost : nn.Module<Tensor, Tensor>
{
    protected LinearHost(string name) : base(name) { }

    /// <summary>The Linear slots in registration order (local names).</summary>
    public abstract IReadOnlyList<string> LinearNames { get; }

    public abstract nn.Module<Tensor, Tensor> GetLinear(string localName);

    protected abstract void SetLinearField(string localName, nn.Module<Tensor, Tensor> module);

    /// <summary>Replaces one slot, keeping the registration order of all children (names and parameters stay stable).</summary>
    public void ReplaceLinear(string localName, nn.Module<Tensor, Tensor> replacement)
    {
        if (!LinearNames.Contains(localName)) throw new ArgumentException($"{GetName()} has no Linear '{localName}'");
        SetLinearField(localName, replacement);
        var children = named_children().Select(c => c.name == localName ? (c.name, (nn.Module)replacement) : c).ToList();
        ClearModules();
        foreach (var (childName, child) in children) register_module(childName, child);
    }
}

public static class LinearFactories
{
    /// <summary>Plain bias-free Linear layers on the given device (the meta device allocates nothing).</summary>
    public static LinearFactory Plain(Device device, ScalarType dtype) =>
        (_, inFeatures, outFeatures) => nn.Linear(inFeatures, outFeatures, hasBias: false, device: device, dtype: dtype);
}
