using Bflora.Training;
using static TorchSharp.torch;

namespace Bflora.Distributed;

/// <summary>
/// The trainer's <see cref="IGradientSync"/> over <see cref="ICollectives"/>: every rank keeps whole (replicated)
/// LoRA weights and sums gradients with one fp32 all-reduce per step. All gradients travel in one flat fp32 buffer —
/// one MPI call instead of one per tensor (the debug model has dozens of tiny ones), and bf16 masters
/// (master_dtype = "bfloat16") are still reduced in fp32, as mixed_precision_reduce says.
/// </summary>
public sealed class CollectivesGradientSync(ICollectives collectives) : IGradientSync
{
    /// <summary>The collectives themselves, for the sharded (FSDP) trainer at world size &gt; 1.</summary>
    public ICollectives Collectives => collectives;

    public int WorldSize => collectives.WorldSize;
    public int Rank => collectives.Rank;

    public void AllReduceGradients(IReadOnlyList<Tensor> grads)
    {
        if (WorldSize == 1 || grads.Count == 0) return;
        using var scope = NewDisposeScope();
        var flat = cat(grads.Select(g => g.reshape(-1).to(ScalarType.Float32)).ToList());
        collectives.AllReduce(flat, ReduceOp.Sum);
        long offset = 0;
        foreach (var g in grads)
        {
            g.copy_(flat.narrow(0, offset, g.numel()).view(g.shape));
            offset += g.numel();
        }
    }

    public double MeanOverRanks(double value)
    {
        if (WorldSize == 1) return value;
        using var t = tensor(new[] { (float)value });
        collectives.AllReduce(t, ReduceOp.Sum);
        return t.item<float>() / WorldSize;
    }

    public int MaxOverRanks(int value)
    {
        if (WorldSize == 1) return value;
        // Reductions are fp32; an int below 2^24 survives the round trip exactly.
        using var t = tensor(new[] { (float)value });
        collectives.AllReduce(t, ReduceOp.Max);
        return (int)t.item<float>();
    }
}
