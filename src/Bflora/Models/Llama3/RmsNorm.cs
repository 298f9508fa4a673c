using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;

namespace Bflora.Models.Llama3;

/// <summary>Root-mean-square layer norm, normalising in fp32 and casting back, as torchtitan does.</summary>
public sealed class RmsNorm : nn.Module<Tensor, Tensor>
{
    private readonly double _eps;
    [ComponentName(Name = nameof(weight))]
    private Parameter _weight;

    public RmsNorm(long dim, double eps, Device? device = null, ScalarType dtype = ScalarType.BFloat16) : base("RMSNorm")
    {
        _eps = eps;
        _weight = new Parameter(torch.ones(new[] { dim }, dtype: dtype, device: device));
        RegisterComponents();
    }

    public Parameter weight
    {
        get => _weight;
        set { _weight = value; ConditionallyRegisterParameter("weight", value); }
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = torch.NewDisposeScope();
        var xf = x.to(ScalarType.Float32);
        var normed = xf * torch.rsqrt(xf.pow(2).mean(new long[] { -1 }, keepdim: true) + _eps);
        return (normed.to(x.dtype) * _weight).MoveToOuterDisposeScope();
    }
}
