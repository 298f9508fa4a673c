using static TorchSharp.torch;

namespace Bflora.Training;

/// <summary>
/// One tensor the optimizer updates: the master value and its two moments, all of the master dtype. A slot may be a
/// whole parameter or (in a sharded run) a rank's shard of a flat buffer; AdamW only sees slots.
/// </summary>
public sealed class AdamWSlot(string name, Tensor master, Tensor expAvg, Tensor expAvgSq) : IDisposable
{
    public string Name { get; } = name;
    public Tensor Master { get; } = master;
    public Tensor ExpAvg { get; } = expAvg;
    public Tensor ExpAvgSq { get; } = expAvgSq;

    /// <summary>A slot starting from <paramref name="initial"/> (copied into <paramref name="dtype"/>) with zero moments.</summary>
    public static AdamWSlot From(string name, Tensor initial, ScalarType dtype)
    {
        using var noGrad = no_grad();
        var master = initial.detach().to(dtype, copy: true);
        return new AdamWSlot(name, master, zeros_like(master), zeros_like(master));
    }

    public void Dispose()
    {
        Master.Dispose();
        ExpAvg.Dispose();
        ExpAvgSq.Dispose();
    }
}

/// <summary>
/// The slots of many parameters over three flat buffers. The optimizer and the clipping see <see cref="Whole"/>, so a
/// step costs a handful of tensor ops however many parameters there are (a LoRA model has two per Linear, hundreds in
/// all, and on a GPU each op is a launch); checkpoints see <see cref="Views"/>, one slot per parameter by name.
/// Elementwise, the update is the same as slot by slot, bit for bit.
/// </summary>
public sealed class FlatAdamWSlots : IDisposable
{
    readonly long[] _offsets;
    readonly long[][] _shapes;

    public AdamWSlot Whole { get; }
    public IReadOnlyList<AdamWSlot> Views { get; }

    /// <param name="parameters">The parameters in order, all on one device; their values start the masters.</param>
    public FlatAdamWSlots(IReadOnlyList<(string Name, Tensor Initial)> parameters, ScalarType dtype, Device device)
    {
        using var noGrad = no_grad();
        _shapes = parameters.Select(p => p.Initial.shape).ToArray();
        _offsets = new long[parameters.Count + 1];
        for (int i = 0; i < parameters.Count; i++) _offsets[i + 1] = _offsets[i] + parameters[i].Initial.numel();
        var master = parameters.Count == 0 ? zeros(0, dtype, device)
            : cat(parameters.Select(p => p.Initial.detach().reshape(-1).to(dtype)).ToList());
        Whole = new AdamWSlot("all", master, zeros_like(master), zeros_like(master));
        Views = parameters.Select((p, i) => new AdamWSlot(p.Name, Part(Whole.Master, i), Part(Whole.ExpAvg, i),
            Part(Whole.ExpAvgSq, i))).ToList();
    }

    /// <summary>Parameter i's part of a flat buffer, in its shape.</summary>
    public Tensor Part(Tensor flat, int i) => flat.narrow(0, _offsets[i], _offsets[i + 1] - _offsets[i]).view(_shapes[i]);

    /// <summary>The gradients laid out as the buffers are, in the masters' dtype (one cast for all); a missing one counts as zeros.</summary>
    public Tensor Flatten(IReadOnlyList<Tensor?> grads)
    {
        if (grads.Count != Views.Count) throw new ArgumentException($"{Views.Count} slots but {grads.Count} gradients");
        var (dtype, device) = (Whole.Master.dtype, Whole.Master.device);
        if (grads.Count == 0) return zeros(0, dtype, device);
        var parts = grads.Select((g, i) => g?.reshape(-1) ?? zeros(_offsets[i + 1] - _offsets[i], dtype, device));
        return cat(parts.ToList()).to(dtype);
    }

    public void Dispose()
    {
        foreach (var view in Views) view.Dispose();
        Whole.Dispose();
    }
}

/// <summary>
/// torch.optim.AdamW (single-tensor path): decoupled weight decay p ← p·(1 − lr·wd), then the Adam update with bias
/// correction by the optimizer's own step count. Gradients arrive already reduced and clipped.
/// </summary>
public sealed class AdamW(double weightDecay, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8)
{
    public double WeightDecay { get; } = weightDecay;
    public double Beta1 { get; } = beta1;
    public double Beta2 { get; } = beta2;
    public double Eps { get; } = eps;

    /// <summary>Optimizer steps taken; the bias corrections use it (saved and restored with the checkpoint).</summary>
    public long StepCount { get; set; }

    /// <summary>Applies one step at rate <paramref name="lr"/>; grads[i] belongs to slots[i] (any dtype, same shape).</summary>
    public void Step(IReadOnlyList<AdamWSlot> slots, IReadOnlyList<Tensor> grads, double lr)
    {
        if (slots.Count != grads.Count) throw new ArgumentException($"{slots.Count} slots but {grads.Count} gradients");
        StepCount++;
        double bc1 = 1 - Math.Pow(Beta1, StepCount);
        double bc2Sqrt = Math.Sqrt(1 - Math.Pow(Beta2, StepCount));
        using var noGrad = no_grad();
        for (int i = 0; i < slots.Count; i++)
        {
            using var scope = NewDisposeScope();
            var s = slots[i];
            var g = grads[i].dtype == s.Master.dtype ? grads[i] : grads[i].to(s.Master.dtype);
            if (WeightDecay != 0) s.Master.mul_(1 - lr * WeightDecay);
            s.ExpAvg.mul_(Beta1).add_(g, alpha: 1 - Beta1);
            s.ExpAvgSq.mul_(Beta2).addcmul_(g, g, value: 1 - Beta2);
            var denom = s.ExpAvgSq.sqrt().div_(bc2Sqrt).add_(Eps);
            s.Master.addcdiv_(s.ExpAvg, denom, value: -lr / bc1);
        }
    }
}
