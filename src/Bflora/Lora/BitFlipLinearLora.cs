using Bflora.Bitflip;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace Bflora.Lora;

/// <summary>
/// A frozen Linear with LoRA merged into the weight and random bit flips on its input and merged weight:
/// y = flip_x(x) · flip_w(W + (alpha/r)·B·A)ᵀ + bias. No dropout, no separate LoRA path (SEMANTICS.md §3).
/// </summary>
public sealed class BitFlipLinearLora : Module<Tensor, Tensor>
{
    readonly Parameter _weight;
    readonly Parameter? _bias, _loraA, _loraB;
    readonly FlipSettings _settings;
    readonly FlipStep _step;

    public int Rank { get; }
    public double Scaling { get; }
    public int LayerIdx { get; }

    /// <param name="weight">Frozen base weight [out, in]; its dtype is also the dtype of A and B.</param>
    /// <param name="generator">Seeds the A init, U(±1/√in) (kaiming-uniform with a = √5); B starts at 0.</param>
    public BitFlipLinearLora(Parameter weight, Parameter? bias, int r, double alpha, int layerIdx,
        FlipSettings settings, FlipStep step, Generator? generator = null) : base(nameof(BitFlipLinearLora))
    {
        if (weight.dim() != 2) throw new ArgumentException("weight must be [out, in]");
        if (r < 0) throw new ArgumentException($"LoRA rank must be ≥ 0, got {r}");
        // A bad probability fails here, at build time, rather than at the first forward.
        settings.XOp(0, layerIdx);
        settings.WOp(0, layerIdx);
        _weight = weight;
        _weight.requires_grad = false;
        _bias = bias;
        if (_bias is not null) _bias.requires_grad = false;
        _settings = settings;
        _step = step;
        Rank = r;
        Scaling = r > 0 ? alpha / r : 1.0;
        LayerIdx = layerIdx;
        register_parameter("weight", _weight);
        if (_bias is not null) register_parameter("bias", _bias);
        if (r > 0)
        {
            long outFeatures = weight.shape[0], inFeatures = weight.shape[1];
            double bound = 1.0 / Math.Sqrt(inFeatures);
            using (torch.no_grad())
            {
                // Drawn on the CPU whatever W's device, so a GPU run starts from the CPU run's adapters.
                using var uniform = torch.rand(new[] { r, inFeatures }, ScalarType.Float32, generator: generator);
                _loraA = new Parameter(uniform.mul(2 * bound).sub_(bound).to(weight.dtype).to(weight.device), requires_grad: true);
                _loraB = new Parameter(torch.zeros(new[] { outFeatures, r }, weight.dtype, device: weight.device), requires_grad: true);
            }
            register_parameter("lora_A", _loraA);
            register_parameter("lora_B", _loraB);
        }
    }

    public Parameter Weight => _weight;
    public Parameter? LoraA => _loraA;
    public Parameter? LoraB => _loraB;

    /// <summary>The seeds this layer uses at the current step.</summary>
    public LayerSeeds CurrentSeeds => FlipSeeds.For(_settings.BaseSeed, _step.Value, LayerIdx);

    /// <summary>
    /// Without autograd (eval, FSDP's first pass) the layer runs in as few buffers as it can; training with a frozen W
    /// goes through <see cref="LoraFlipFunction"/> (no full-size weight gradient); a trainable W through the plain
    /// composition. All three give the same bits.
    /// </summary>
    public override Tensor forward(Tensor x)
    {
        if (!torch.is_grad_enabled()) return ForwardWithoutGrad(x);
        if (_loraA is null || _weight.requires_grad || !(_loraA.requires_grad || _loraB!.requires_grad))
            return ForwardReference(x);
        long step = _step.Value;
        return LoraFlipFunction.Apply(x, _weight, _loraA, _loraB!,
            new LoraFlipArgs(_settings.XOp(step, LayerIdx), _settings.WOp(step, LayerIdx), Scaling, _bias));
    }

    /// <summary>
    /// The merged weight is built and flipped in one buffer, and it and the flipped input are freed as soon as the
    /// matmul is done, so a module's forward holds one weight-sized temporary at a time, not four per Linear.
    /// </summary>
    Tensor ForwardWithoutGrad(Tensor x)
    {
        long step = _step.Value;
        FlipOp xop = _settings.XOp(step, LayerIdx), wop = _settings.WOp(step, LayerIdx);
        using var xf = xop.IsIdentity ? null : BitFlip.Flip(x, xop);
        using var w = _loraA is not null ? LoraFlipFunction.Merge(_weight, _loraA, _loraB!, Scaling)
            : wop.IsIdentity ? null : _weight.clone();
        if (w is not null && !wop.IsIdentity) BitFlip.FlipInto(w, w, wop);
        return functional.linear(xf ?? x, w ?? _weight, _bias);
    }

    /// <summary>
    /// The layer as a composition of autograd ops: the reference the fused function is tested against, and the path
    /// for full training (where W's own gradient is wanted).
    /// </summary>
    public Tensor ForwardReference(Tensor x)
    {
        long step = _step.Value;
        var xf = BitFlipFunction.Apply(x, _settings.XOp(step, LayerIdx));
        // bf16 ops in the original's order, so a delta under half an ulp of W vanishes as it does there.
        Tensor w = _loraA is null ? _weight : _weight.add(_loraB!.matmul(_loraA).mul(Scaling));
        var wf = BitFlipFunction.Apply(w, _settings.WOp(step, LayerIdx));
        return functional.linear(xf, wf, _bias);
    }
}
