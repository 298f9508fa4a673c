using static TorchSharp.torch;

namespace Bflora.Distributed;

/// <summary>
/// The token embedding and the output head without gathering them: rank r holds vocabulary rows [r·Vs, (r+1)·Vs) of
/// each ([Vs, d] views of its row-aligned shards). Ranks train on different windows, so each first gathers every rank's
/// token ids (or final hidden states), serves its rows for all of them, and a reduce-scatter hands each rank the
/// sum over vocabulary slices for its own tokens. Only a frozen (unconverted) output head goes this way: flips and LoRA
/// on the head need the whole matrix, and then the head unit is gathered like a block.
/// </summary>
internal static class VocabParallel
{
    /// <summary>Embeddings [B, S, d] (bf16) of this rank's <paramref name="ids"/>; exact, as only one slice holds each row.</summary>
    public static Tensor Embed(ICollectives c, Tensor rows, Tensor ids)
    {
        using var scope = NewDisposeScope();
        long vs = rows.shape[0], d = rows.shape[1];
        var local = GatherIds(c, ids).sub_(c.Rank * vs);
        var mine = local.ge(0).logical_and_(local.lt(vs)).unsqueeze(1);
        var partial = rows.index_select(0, local.clamp(0, vs - 1)).to(ScalarType.Float32).masked_fill_(mine.logical_not(), 0);
        var own = empty(ids.numel() * d, ScalarType.Float32);
        c.ReduceScatter(partial.reshape(-1), own);
        return own.view(ids.shape.Append(d).ToArray()).to(ScalarType.BFloat16).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Cross-entropy of the output head on the normalised hidden states <paramref name="normed"/> ([B, S, d], part of
    /// a graph): the objective of every rank's tokens, Σ loss / (tokens per rank · <paramref name="divisor"/>), is
    /// backpropagated through this rank's vocabulary slice, and the reduce-scattered gradient is sent on into
    /// <paramref name="normed"/>'s graph. Returns the mean loss of this rank's tokens.
    /// </summary>
    public static double CrossEntropyBackward(ICollectives c, Tensor normed, Tensor rows, Tensor labels, long vocab, double divisor)
    {
        using var scope = NewDisposeScope();
        long d = rows.shape[1];
        var own = normed.reshape(-1, d);
        long tokens = own.shape[0];
        var gathered = GatherHidden(c, own);
        gathered.requires_grad_(true);
        var perToken = PerTokenLoss(c, gathered, rows, labels, vocab);
        perToken.sum().div(tokens * divisor).backward();

        var grad = gathered.grad!.to(ScalarType.Float32).reshape(-1);
        var ownGrad = empty(tokens * d, ScalarType.Float32);
        c.ReduceScatter(grad, ownGrad);
        autograd.backward(new[] { normed }, new[] { ownGrad.view(normed.shape).to(normed.dtype) });
        return perToken.narrow(0, c.Rank * tokens, tokens).mean().item<float>();
    }

    /// <summary>
    /// Forward only (evaluation): the fp32 cross-entropy of this rank's tokens, the first <paramref name="counted"/> of
    /// them summed (the rest fill a batch that has fewer windows than the other ranks'). Every rank must call it.
    /// </summary>
    public static Tensor CrossEntropySum(ICollectives c, Tensor normed, Tensor rows, Tensor labels, long vocab, long counted)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var own = normed.reshape(-1, rows.shape[1]);
        long tokens = own.shape[0];
        var perToken = PerTokenLoss(c, GatherHidden(c, own), rows, labels, vocab);
        return perToken.narrow(0, c.Rank * tokens, counted).sum().MoveToOuterDisposeScope();
    }

    /// <summary>Every rank's hidden states [world · tokens, d] (bf16, rank order), outside any graph.</summary>
    private static Tensor GatherHidden(ICollectives c, Tensor own)
    {
        var gathered = empty(new[] { c.WorldSize * own.shape[0], own.shape[1] }, ScalarType.BFloat16);
        using (no_grad()) c.AllGather(own.detach().contiguous(), gathered);
        return gathered;
    }

    /// <summary>
    /// The per-token cross-entropy of every rank's tokens ([world · tokens], fp32, rank order) from this rank's
    /// vocabulary slice of the logits of <paramref name="gathered"/>. Per token: max and Σexp over the vocabulary and
    /// the target logit each come from an all-reduce of the slices' parts; the cross-rank parts enter as constants
    /// (x + (total − x).detach()), so each slice's gradient is its own share of softmax − one-hot. Logits are bf16 like
    /// the single-process path's, the log-sum-exp is taken in fp32.
    /// </summary>
    private static Tensor PerTokenLoss(ICollectives c, Tensor gathered, Tensor rows, Tensor labels, long vocab)
    {
        long vs = rows.shape[0], first = c.Rank * vs;
        // The logits are the largest tensors of the step: each copy is freed as soon as the next exists (the graph
        // keeps none of them but the fp32 one), and logsumexp keeps no exp-sized tensor for the backward.
        Tensor logits;
        using (var bf16 = nn.functional.linear(gathered, rows)) logits = bf16.to(ScalarType.Float32);
        if (first + vs > vocab)   // padding rows of the last slice are not vocabulary entries
        {
            using var unmasked = logits;
            logits = unmasked.masked_fill(arange(first, first + vs).ge(vocab), float.NegativeInfinity);
        }
        using (logits)
        {
            var max = logits.detach().amax(new long[] { 1 }).contiguous();
            c.AllReduce(max, ReduceOp.Max);
            var sumLocal = logits.logsumexp(1).sub(max).exp();
            var sum = WithOtherSlices(c, sumLocal);
            var target = GatherIds(c, labels).sub_(first);
            var mine = target.ge(0).logical_and_(target.lt(vs));
            var picked = logits.gather(1, target.clamp(0, vs - 1).unsqueeze(1)).squeeze(1);
            var targetLogit = WithOtherSlices(c, where(mine, picked, zeros_like(picked)));
            return sum.log().add(max).sub(targetLogit);
        }
    }

    /// <summary>x + (Σ over ranks of x − x) with the second term constant: the job-wide value, differentiable in this slice's part.</summary>
    private static Tensor WithOtherSlices(ICollectives c, Tensor local)
    {
        var total = local.detach().clone();
        c.AllReduce(total, ReduceOp.Sum);
        return local.add(total.sub(local.detach()));
    }

    /// <summary>Every rank's ids (flattened, rank order) as int64; they travel as fp32, exact for ids below 2^24.</summary>
    private static Tensor GatherIds(ICollectives c, Tensor ids)
    {
        var asFloat = ids.reshape(-1).to(ScalarType.Float32).contiguous();
        var all = empty(asFloat.numel() * c.WorldSize, ScalarType.Float32);
        c.AllGather(asFloat, all);
        return all.to(ScalarType.Int64);
    }
}
