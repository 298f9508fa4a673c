using Bflora.Models.Llama3;
using Bflora.Training;
using static TorchSharp.torch;

namespace Bflora.Distributed;

/// <summary>
/// One of the two gather buffers: full-size bf16 room for the largest unit of its parity (frozen part and LoRA part),
/// the unit whose weights it holds now, and the all-gathers still filling it.
/// </summary>
internal sealed class GatherBuffer(long frozenNumel) : IDisposable
{
    public Tensor Frozen { get; } = zeros(frozenNumel, ScalarType.BFloat16);
    public Tensor Lora { get; private set; } = zeros(0, ScalarType.BFloat16);
    public FsdpUnit? Resident;
    public List<IPendingCollective> Pending { get; } = new();

    public void AllocateLora(long numel)
    {
        Lora.Dispose();
        Lora = zeros(numel, ScalarType.BFloat16);
    }

    public void Dispose()
    {
        Frozen.Dispose();
        Lora.Dispose();
    }
}

/// <summary>
/// The sharded training step. Activation checkpointing is an explicit two-pass loop rather than a custom autograd
/// function: pass 1 runs every block under no_grad and keeps only block inputs; the head runs with grad and its
/// backward yields dL/dh at the last block's output; pass 2 walks the blocks backwards, re-gathers each, recomputes
/// it with grad from its kept input and backpropagates the incoming gradient, handing dL/dx to the block before.
/// The flips use the same step counter in both passes, so the recompute is bit-identical to pass 1.
/// </summary>
public sealed partial class FsdpModel
{
    /// <summary>
    /// Forward and backward of one micro-batch; returns its (bf16) cross-entropy. The trained part's gradients of
    /// loss/divisor (LoRA, or every weight in full training) are reduce-scattered into each unit's fp32
    /// <see cref="FsdpUnit.GradShard"/> right after the unit's backward.
    /// </summary>
    public double MicroBatch(Tensor inputs, Tensor labels, double divisor)
    {
        using var scope = NewDisposeScope();
        var (cos, sin) = Model.RopeFor(inputs.shape[1], inputs.device);
        // Per block: its input, and without checkpointing its output, whose graph the backward then walks.
        var kept = new List<(Tensor X, Tensor? Y)>(Blocks.Count);
        var h = EmbedTokens(inputs);
        for (int i = 0; i < Blocks.Count; i++)
        {
            Use(Blocks[i], i + 1 < Blocks.Count ? Blocks[i + 1] : Head);
            if (ActivationCheckpointing)
            {
                kept.Add((h, null));
                using (no_grad()) h = RunBlock(i, h, cos, sin);
            }
            else
            {
                var x = h.detach().requires_grad_(true);
                h = RunBlock(i, x, cos, sin);
                kept.Add((x, h));
            }
        }

        Use(Head, Blocks.Count > 0 ? Blocks[^1] : null);
        var last = h.detach().requires_grad_(true);
        double lossValue = VocabParallelHead
            ? VocabParallel.CrossEntropyBackward(_c, Model.FinalNorm(last), OutputRows!.FrozenShard.view(-1, Model.Args.Dim),
                labels, Model.Args.VocabSize, divisor)
            : GatheredHeadBackward(last, labels, divisor);
        // A tied head's matrix is the embedding's: its gradient is complete only after the lookup's backward below.
        bool tiedAndTrained = FullTraining && Head == Embedding;
        if (!tiedAndTrained) Head.ReduceScatterGrads(_c, _gradFull, _gradShard);
        var grad = last.grad ?? zeros_like(last);

        for (int i = Blocks.Count - 1; i >= 0; i--)
        {
            // The block's weights are gathered again either way: the LoRA layers rebuild their merged weight from them.
            Use(Blocks[i], i > 0 ? Blocks[i - 1] : null);
            // Only the gradient flowing into block i-1 lives on: everything else this block's recompute and backward
            // made (the layers' gradients handed back by autograd included) goes with this scope.
            using (var blockScope = NewDisposeScope())
            {
                var (x, y) = kept[i];
                if (y is null)
                {
                    x.requires_grad_(true);
                    y = RunBlock(i, x, cos, sin);
                }
                autograd.backward(new[] { y }, new[] { grad });
                var inputGrad = (x.grad ?? zeros_like(x)).MoveToOuterDisposeScope();
                grad.Dispose();
                x.Dispose();
                y.Dispose();
                grad = inputGrad;
            }
            Blocks[i].ReduceScatterGrads(_c, _gradFull, _gradShard);
        }
        if (FullTraining)
        {
            // The lookup again, with grad, to carry dL/dh into the embedding matrix (gathered again if a block evicted it).
            Use(Embedding, null);
            using (var embedScope = NewDisposeScope())
                autograd.backward(new[] { Model.Embed(inputs) }, new[] { grad });
            Embedding.ReduceScatterGrads(_c, _gradFull, _gradShard);
        }
        return lossValue;
    }

    /// <summary>
    /// Forward only (evaluation, flips of the current step): the summed fp32 cross-entropy, as the single-process
    /// evaluator computes it, of this rank's first <paramref name="windows"/> windows of the batch; the others only
    /// keep the ranks in step (every rank must call this for every batch, since each unit is gathered collectively).
    /// </summary>
    public Tensor CrossEntropySum(Tensor inputs, Tensor labels, long windows)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var (cos, sin) = Model.RopeFor(inputs.shape[1], inputs.device);
        var h = EmbedTokens(inputs);
        for (int i = 0; i < Blocks.Count; i++)
        {
            Use(Blocks[i], i + 1 < Blocks.Count ? Blocks[i + 1] : Head);
            h = RunBlock(i, h, cos, sin);
        }
        Use(Head, null);
        if (VocabParallelHead)
            return VocabParallel.CrossEntropySum(_c, Model.FinalNorm(h), OutputRows!.FrozenShard.view(-1, Model.Args.Dim),
                labels, Model.Args.VocabSize, windows * labels.size(1)).MoveToOuterDisposeScope();
        if (windows == 0) return zeros(Array.Empty<long>(), ScalarType.Float32).MoveToOuterDisposeScope();
        var logits = Model.Head(h.narrow(0, 0, windows)).to(ScalarType.Float32);
        return nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), labels.narrow(0, 0, windows).reshape(-1),
            reduction: nn.Reduction.Sum).MoveToOuterDisposeScope();
    }

    /// <summary>The token embeddings of <paramref name="inputs"/>, outside any graph (the embedding is frozen).</summary>
    private Tensor EmbedTokens(Tensor inputs)
    {
        using var noGrad = no_grad();
        if (VocabParallelHead) return VocabParallel.Embed(_c, Embedding.FrozenShard.view(-1, Model.Args.Dim), inputs);
        Use(Embedding, Blocks.Count > 0 ? Blocks[0] : Head);
        return Model.Embed(inputs);
    }

    /// <summary>The head gathered whole: the single-process path's cross-entropy on the bf16 logits.</summary>
    private double GatheredHeadBackward(Tensor last, Tensor labels, double divisor)
    {
        using var scope = NewDisposeScope();   // the logits, the largest activation, go before the blocks are recomputed
        var logits = Model.Head(last);
        var loss = Training.TrainLoss.CrossEntropy(logits, labels);
        loss.div(divisor).backward();
        return loss.item<float>();
    }

    private Tensor RunBlock(int i, Tensor x, Tensor cos, Tensor sin)
    {
        var block = Model.Layers[i];
        block.SetRope(cos, sin);
        return block.call(x);
    }

    /// <summary>
    /// Makes <paramref name="unit"/> resident in its buffer (waiting for its prefetch, or gathering now), then starts
    /// the all-gather of <paramref name="next"/> if it goes to the other buffer. A next unit of the same parity would
    /// overwrite the weights about to be used, so it is gathered later, when its turn comes. The non-blocking gather
    /// progresses inside MPI calls (libnbc), so the overlap is partial on CPU; the ordering is what stays correct.
    /// </summary>
    private void Use(FsdpUnit unit, FsdpUnit? next)
    {
        var buffer = _buffers[unit.Parity];
        if (buffer.Resident != unit)
        {
            Gather(unit, buffer, wait: true);
        }
        foreach (var p in buffer.Pending) p.Wait();
        buffer.Pending.Clear();
        if (next is not null && next.Parity != unit.Parity && _buffers[next.Parity].Resident != next)
            Gather(next, _buffers[next.Parity], wait: false);
    }

    private void Gather(FsdpUnit unit, GatherBuffer buffer, bool wait)
    {
        foreach (var p in buffer.Pending) p.Wait();
        buffer.Pending.Clear();
        buffer.Resident = unit;
        using var frozen = buffer.Frozen.narrow(0, 0, unit.Frozen.PaddedNumel);
        using var lora = buffer.Lora.narrow(0, 0, unit.Lora.PaddedNumel);
        if (wait)
        {
            _c.AllGather(unit.FrozenShard, frozen);
            if (unit.Lora.Numel > 0) _c.AllGather(unit.LoraShard, lora);
            return;
        }
        buffer.Pending.Add(_c.StartAllGather(unit.FrozenShard, frozen));
        if (unit.Lora.Numel > 0) buffer.Pending.Add(_c.StartAllGather(unit.LoraShard, lora));
    }

    /// <summary>The optimizer slots (one per unit with LoRA) and their gradient shards, in the same order.</summary>
    public IReadOnlyList<AdamWSlot> Slots => Units.Where(u => u.Slot is not null).Select(u => u.Slot!).ToList();

    public IReadOnlyList<Tensor> GradShards => Units.Where(u => u.Slot is not null).Select(u => u.GradShard).ToList();

    public void ZeroGrads()
    {
        foreach (var u in Units) u.GradShard.zero_();
    }

    /// <summary>
    /// clip_grad_norm_ over the global gradient: the squared norms of the shards are summed (fp32 all-reduce), every
    /// rank scales its shard by the same coefficient. Returns the norm before clipping.
    /// </summary>
    public double ClipGradients(double maxNorm)
    {
        using var scope = NewDisposeScope();
        var sum = zeros(1, ScalarType.Float32);
        foreach (var g in GradShards) sum.add_(g.square().sum());
        _c.AllReduce(sum, ReduceOp.Sum);
        double norm = Math.Sqrt(sum.item<float>());
        double coef = GradientClipping.Coefficient(norm, maxNorm);
        if (coef < 1)
            foreach (var g in GradShards) g.mul_(coef);
        return norm;
    }

    /// <summary>
    /// Rounds the updated masters into the bf16 shards. Gathered copies are now stale (the LoRA part), so no unit
    /// counts as resident any more: the next use gathers again.
    /// </summary>
    public void CopyMastersToShards()
    {
        foreach (var u in Units) u.CopyMasterToShard();
        foreach (var b in _buffers)
        {
            foreach (var p in b.Pending) p.Wait();
            b.Pending.Clear();
            b.Resident = null;
        }
    }

    /// <summary>
    /// Every unit's weights all-gathered in turn, as (name, tensor of the full shape) per member. It is a collective:
    /// every rank must enumerate it to the end. The tensors are views of the unit's gathered copy, freed when the
    /// enumeration moves to the next unit.
    /// </summary>
    public IEnumerable<IReadOnlyList<(string Name, Tensor Value)>> GatherWeights()
    {
        foreach (var u in Units)
        {
            using var full = empty(u.Frozen.PaddedNumel, ScalarType.BFloat16);
            _c.AllGather(u.FrozenShard, full);
            var members = new List<(string, Tensor)>();
            foreach (var m in u.Frozen.Members)
            {
                using var flat = full.narrow(0, m.Offset, m.Numel);
                members.Add((m.Name, flat.view(m.Shape)));
            }
            try
            {
                yield return members;
            }
            finally
            {
                foreach (var (_, t) in members) t.Dispose();
            }
        }
    }

    /// <summary>
    /// The whole LoRA state, unit by unit all-gathered: on rank 0 every (layer name, A, B) as new bf16 tensors (the
    /// caller disposes them); on the other ranks an empty list. Every rank must call it (it is a collective).
    /// </summary>
    public List<(string Name, Tensor A, Tensor B)> GatherAdapters()
    {
        var result = new List<(string, Tensor, Tensor)>();
        foreach (var u in Units.Where(u => u.Lora.Numel > 0))
        {
            using var full = empty(u.Lora.PaddedNumel, ScalarType.BFloat16);
            _c.AllGather(u.LoraShard, full);
            if (_c.Rank != 0) continue;
            var members = u.Lora.Members;
            for (int i = 0; i + 1 < members.Count; i += 2)
            {
                var (a, b) = (members[i], members[i + 1]);
                string layer = a.Name[..^".lora_A".Length];
                result.Add((layer, full.narrow(0, a.Offset, a.Numel).view(a.Shape).clone(),
                    full.narrow(0, b.Offset, b.Numel).view(b.Shape).clone()));
            }
        }
        return result;
    }
}
