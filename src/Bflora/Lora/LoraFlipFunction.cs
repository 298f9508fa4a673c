using Bflora.Bitflip;
using Bflora.Bitflip.Cuda;
using TorchSharp;
using static TorchSharp.torch;

namespace Bflora.Lora;

/// <summary>What the fused layer function needs besides its tensors: the two flips, the LoRA scaling, the bias.</summary>
public sealed record LoraFlipArgs(FlipOp XOp, FlipOp WOp, double Scaling, Tensor? Bias);

/// <summary>
/// The whole LoRA bit-flip layer y = flip_x(x)·flip_w(W + s·B·A)ᵀ + bias as one autograd function, for a frozen W.
/// Naive autograd through W + s·B·A forms the full [out, in] gradient gᵀx_f (as costly as the forward matmul) only
/// to project it onto A and B. Here dB = s·gᵀ(x_f Aᵀ) and dA = s·(g B)ᵀ x_f cost O(r·(in+out)) per token; the weight
/// flip's straight-through mask (zero where the zero-out dropped an element) is applied as a correction at the
/// dropped positions: G_oi = Σ_m g[m,o]·x_f[m,i], then dB[o,:] −= s·G_oi·A[:,i] and dA[:,i] −= s·G_oi·B[o,:].
/// Forward values are the reference composition's, op for op, so outputs are bit-identical to it.
/// </summary>
public sealed class LoraFlipFunction : torch.autograd.SingleTensorFunction<LoraFlipFunction>
{
    public override string Name => "LoraFlip";

    /// <summary>Tensor arguments: x, frozen W [out, in], A [r, in], B [out, r].</summary>
    public static Tensor Apply(Tensor x, Tensor weight, Tensor loraA, Tensor loraB, LoraFlipArgs args) =>
        apply(x, weight, loraA, loraB, args);

    /// <summary>
    /// The merged weight W + s·B·A in bf16 in the reference's rounding order (B·A, then ·s, then + W), in one buffer:
    /// IEEE addition commutes, so adding W in place gives the same bits as W.add(...).
    /// </summary>
    public static Tensor Merge(Tensor weight, Tensor loraA, Tensor loraB, double scaling)
    {
        var merged = loraB.matmul(loraA);
        merged.mul_(scaling).add_(weight);
        return merged;
    }

    public override Tensor forward(torch.autograd.AutogradContext ctx, params object[] vars)
    {
        var x = (Tensor)vars[0];
        var weight = (Tensor)vars[1];
        var loraA = (Tensor)vars[2];
        var loraB = (Tensor)vars[3];
        var args = (LoraFlipArgs)vars[4];
        bool xGrad = x.requires_grad;

        // The input flip's drops are recorded now (they are x's straight-through mask); the weight flip's are
        // recorded in the backward, which rebuilds the flipped weight anyway, so the forward never waits on them.
        Tensor xf = x;
        Tensor? xDropped = null;
        if (!args.XOp.IsIdentity)
        {
            xf = torch.empty(x.shape, x.dtype, device: x.device);
            if (xGrad) xDropped = BitFlip.FlipIntoWithDropRecord(x, xf, args.XOp);
            else BitFlip.FlipInto(x, xf, args.XOp);
        }
        using var wf = Merge(weight, loraA, loraB, args.Scaling);
        if (!args.WOp.IsIdentity) BitFlip.FlipInto(wf, wf, args.WOp);

        // Everything goes through save_for_backward: autograd then holds the storage, whatever dispose scope the
        // forward ran in (a block's scope may end before the backward does). The flipped weight is not kept: saved
        // for every Linear it would be a second copy of the model; the backward rebuilds it, one layer at a time.
        var layout = new Saved(Rebuild: xGrad || args.WOp.ZeroOutT is not null, xGrad, HasXDropped: xDropped is not null);
        var saved = new List<Tensor> { xf, loraA, loraB };
        if (layout.Rebuild) saved.Add(weight);
        if (xDropped is not null) saved.Add(xDropped);
        ctx.save_for_backward(saved);
        ctx.save_data("args", args);
        ctx.save_data("layout", layout);
        return nn.functional.linear(xf, wf, args.Bias);
    }

    /// <summary>Gradients for x, W (none: frozen), A, B and the non-tensor argument (none).</summary>
    public override List<Tensor> backward(torch.autograd.AutogradContext ctx, Tensor grad)
    {
        var args = (LoraFlipArgs)ctx.get_data("args");
        var layout = (Saved)ctx.get_data("layout");
        var saved = ctx.get_saved_variables();
        Tensor xf = saved[0], loraA = saved[1], loraB = saved[2];
        long inFeatures = loraA.size(1), outFeatures = loraB.size(0);
        double s = args.Scaling;

        using var scope = NewDisposeScope();
        Tensor? wf = null, dropped = null;
        if (layout.Rebuild)
        {
            wf = Merge(saved[3], loraA, loraB, s);
            if (!args.WOp.IsIdentity) dropped = BitFlip.FlipIntoWithDropRecord(wf, wf, args.WOp);
        }
        var g = grad.reshape(-1, outFeatures);
        var x2 = xf.reshape(-1, inFeatures);
        var gradB = g.t().matmul(x2.matmul(loraA.t())).mul_(s);
        var gradA = g.matmul(loraB).t().matmul(x2).mul_(s);
        if (dropped is not null) (gradA, gradB) = Correct(gradA, gradB, g, x2, loraA, loraB, dropped, s);

        Tensor? gradX = null;
        if (layout.XGrad)
        {
            gradX = g.matmul(wf!).view_as(xf);
            if (layout.HasXDropped) BitFlip.ZeroWhereDropped_(gradX, saved[4]);
            gradX.MoveToOuterDisposeScope();
        }
        gradA.MoveToOuterDisposeScope();
        gradB.MoveToOuterDisposeScope();
        return new List<Tensor> { gradX!, null!, gradA, gradB, null! };
    }

    /// <summary>
    /// What the saved list holds after x_f, A, B: W when the backward rebuilds the flipped weight (for x's gradient,
    /// or to learn the weight flip's drops), then the input flip's drop record.
    /// </summary>
    sealed record Saved(bool Rebuild, bool XGrad, bool HasXDropped);

    /// <summary>
    /// Removes from dA and dB what the dropped weight positions contributed: those got no gradient through the flip.
    /// A device's drop record (a bool per weight element) goes to one kernel; the CPU engine's index list to
    /// <see cref="CorrectAt"/>.
    /// </summary>
    internal static (Tensor GradA, Tensor GradB) Correct(Tensor gradA, Tensor gradB, Tensor g, Tensor x2, Tensor loraA,
        Tensor loraB, Tensor dropped, double s)
    {
        if (dropped.dtype != ScalarType.Bool)
            return CorrectAt(gradA, gradB, g, x2, loraA, loraB, dropped, s);
        var newA = gradA.to(ScalarType.Float32, copy: true).contiguous();
        var newB = gradB.to(ScalarType.Float32, copy: true).contiguous();
        DeviceFlip.CorrectDroppedLoraGradients(newA, newB, g, x2, loraA, loraB, dropped, s, BitFlip.KernelsFor(g));
        return (newA.to(gradA.dtype), newB.to(gradB.dtype));
    }

    /// <summary>
    /// The correction at listed flat indices, in fp32 on the small [r, in] and [out, r] tensors so the subtraction
    /// adds no rounding of its own; G at the drops is summed in fp32 too (<see cref="DroppedWeightGradient"/>).
    /// </summary>
    internal static (Tensor GradA, Tensor GradB) CorrectAt(Tensor gradA, Tensor gradB, Tensor g, Tensor x2, Tensor loraA,
        Tensor loraB, Tensor dropped, double s)
    {
        long inFeatures = loraA.size(1);
        var o = dropped.div(inFeatures, rounding_mode: RoundingMode.floor);
        var i = dropped.remainder(inFeatures);
        var sg = DroppedWeightGradient.AtDrops(g, x2, dropped).mul_(-s).unsqueeze(1);  // [K, 1]
        var fixB = loraA.index_select(1, i).t().to(ScalarType.Float32).mul_(sg);        // rows of dB: [K, r]
        var fixA = loraB.index_select(0, o).to(ScalarType.Float32).mul_(sg).t();       // columns of dA: [r, K]
        var newB = gradB.to(ScalarType.Float32, copy: true).index_add_(0, o, fixB, 1).to(gradB.dtype);
        var newA = gradA.to(ScalarType.Float32, copy: true).index_add_(1, i, fixA, 1).to(gradA.dtype);
        return (newA, newB);
    }
}
