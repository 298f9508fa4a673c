using Bflora.Training;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Bflora.Distributed;

/// <summary>One parameter inside a unit's flat buffer: where it lies and its full (unsharded) shape.</summary>
public sealed record FsdpMember(string Name, long[] Shape, long Offset)
{
    public long Numel => Shape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>
/// The flat layout of one group of parameters (a unit's frozen weights, or its LoRA adapters): members back to back,
/// padded to a multiple of the world size so every rank holds an equal shard of <see cref="ShardNumel"/> elements.
/// Rank r's shard is the flat range [r·ShardNumel, (r+1)·ShardNumel). With <c>align</c> = d a [V, d] matrix is cut
/// between rows: each shard holds ceil(V / W) whole rows (vocabulary-parallel embedding and head).
/// </summary>
public sealed class FlatLayout
{
    public IReadOnlyList<FsdpMember> Members { get; }
    public long Numel { get; }
    public long ShardNumel { get; }
    public long PaddedNumel => ShardNumel * World;
    public int World { get; }

    public FlatLayout(IEnumerable<(string Name, long[] Shape)> members, int world, long align = 1)
    {
        var list = new List<FsdpMember>();
        long offset = 0;
        foreach (var (name, shape) in members)
        {
            var m = new FsdpMember(name, shape, offset);
            list.Add(m);
            offset += m.Numel;
        }
        Members = list;
        Numel = offset;
        World = world;
        ShardNumel = (offset + world * align - 1) / (world * align) * align;
    }

    /// <summary>The part of <paramref name="m"/> inside rank <paramref name="rank"/>'s shard: (start in the member, start in the shard, count).</summary>
    public (long MemberStart, long ShardStart, long Count)? Overlap(FsdpMember m, int rank)
    {
        long lo = Math.Max(m.Offset, rank * ShardNumel), hi = Math.Min(m.Offset + m.Numel, (rank + 1) * ShardNumel);
        return hi > lo ? (lo - m.Offset, lo - rank * ShardNumel, hi - lo) : null;
    }
}

/// <summary>
/// A unit of FSDP sharding (a transformer block, the embedding, or the head = final norm + output): this rank's bf16
/// shards of its frozen weights and of its LoRA adapters, and — for the part that trains (the LoRA part, or in full
/// training the weights themselves) — the fp32 gradient shard and the optimizer slot (master and AdamW moments over the
/// same shard). The module's parameters are permanent views into one of two shared gather buffers
/// (<see cref="Parity"/>), valid only while this unit is the buffer's resident. Units used vocabulary-parallel are
/// never gathered (parity -1).
/// </summary>
public sealed class FsdpUnit : IDisposable
{
    public string Name { get; }
    public int Parity { get; }
    public FlatLayout Frozen { get; }
    public FlatLayout Lora { get; }
    public Tensor FrozenShard { get; }
    public Tensor LoraShard { get; }
    /// <summary>fp32 gradient of this rank's shard of the trained part, summed over micro-batches and ranks.</summary>
    public Tensor GradShard { get; }
    public AdamWSlot? Slot { get; private set; }
    /// <summary>The LoRA parameters (views into the gather buffer) in <see cref="Lora"/>'s member order.</summary>
    public IReadOnlyList<Parameter> LoraParams { get; }

    /// <summary>True when the weights train (full training): then they, not the LoRA adapters, are the trained part.</summary>
    public bool FullTraining => _frozenParams is not null;

    /// <summary>The layout of what trains: <see cref="Frozen"/> in full training, else <see cref="Lora"/>.</summary>
    public FlatLayout Trained => FullTraining ? Frozen : Lora;

    private Tensor TrainedShard => FullTraining ? FrozenShard : LoraShard;

    private IReadOnlyList<Parameter> TrainedParams => _frozenParams ?? LoraParams;

    private readonly IReadOnlyList<Parameter>? _frozenParams;

    /// <param name="frozenParams">In full training, the weights' parameters (gather-buffer views) in <see cref="Frozen"/>'s member order.</param>
    public FsdpUnit(string name, int parity, FlatLayout frozen, FlatLayout lora, IReadOnlyList<Parameter> loraParams,
        IReadOnlyList<Parameter>? frozenParams = null)
    {
        Name = name;
        Parity = parity;
        Frozen = frozen;
        Lora = lora;
        LoraParams = loraParams;
        _frozenParams = frozenParams;
        FrozenShard = zeros(frozen.ShardNumel, ScalarType.BFloat16);
        LoraShard = zeros(lora.ShardNumel, ScalarType.BFloat16);
        GradShard = zeros(Trained.ShardNumel, ScalarType.Float32);
    }

    /// <summary>Bytes of the shard tensors this rank allocated for the unit (read from the tensors themselves).</summary>
    public long ShardBytes => FrozenShard.numel() * FrozenShard.element_size() + LoraShard.numel() * LoraShard.element_size();

    /// <summary>Creates the optimizer slot from the trained shard's current values (fp32 or bf16 master).</summary>
    public void CreateSlot(ScalarType masterDtype)
    {
        if (Trained.Numel > 0) Slot = AdamWSlot.From(FullTraining ? Name : $"{Name}.lora", TrainedShard, masterDtype);
    }

    /// <summary>
    /// Sums this micro-batch's gradients of the trained part (bf16 .grad of the gathered parameters) over ranks into
    /// <see cref="GradShard"/> with one fp32 reduce-scatter, then drops the full-size .grad tensors.
    /// </summary>
    public void ReduceScatterGrads(ICollectives collectives, Tensor fullScratch, Tensor shardScratch)
    {
        var layout = Trained;
        if (layout.Numel == 0) return;
        using var scope = NewDisposeScope();
        var full = fullScratch.narrow(0, 0, layout.PaddedNumel);
        full.zero_();
        var parameters = TrainedParams;
        for (int i = 0; i < parameters.Count; i++)
        {
            var m = layout.Members[i];
            if (parameters[i].grad is { } g) full.narrow(0, m.Offset, m.Numel).copy_(g.reshape(-1));
            parameters[i].grad = null;
        }
        var shard = shardScratch.narrow(0, 0, layout.ShardNumel);
        collectives.ReduceScatter(full, shard);
        GradShard.add_(shard);
    }

    /// <summary>After AdamW: the master shard rounded into the bf16 shard the next gather sends.</summary>
    public void CopyMasterToShard()
    {
        if (Slot is null) return;
        using var noGrad = no_grad();
        TrainedShard.copy_(Slot.Master);
    }

    public void Dispose()
    {
        FrozenShard.Dispose();
        LoraShard.Dispose();
        GradShard.Dispose();
        Slot?.Dispose();
    }
}
