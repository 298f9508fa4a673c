using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;

namespace Bflora.Models.Llama3;

/// <summary>
/// Token embedding table. TorchSharp's Embedding initialises its weight on the CPU even when asked for the meta
/// device (tens of seconds and gigabytes at 70B), so the model keeps its own table that stays meta until loaded.
/// </summary>
public sealed class TokenEmbedding : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = nameof(weight))]
    private Parameter _weight;

    public TokenEmbedding(long vocab, long dim, Device device, ScalarType dtype) : base("TokenEmbedding")
    {
        _weight = new Parameter(empty(new[] { vocab, dim }, dtype: dtype, device: device));
        RegisterComponents();
    }

    public Parameter weight
    {
        get => _weight;
        set { _weight = value; ConditionallyRegisterParameter("weight", value); }
    }

    public override Tensor forward(Tensor tokens)
    {
        var shape = tokens.shape.Append(_weight.shape[1]).ToArray();
        using var flat = tokens.reshape(-1);
        using var rows = _weight.index_select(0, flat);
        return rows.reshape(shape);
    }
}
