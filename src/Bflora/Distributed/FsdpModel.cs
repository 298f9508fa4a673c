using Bflora.Bitflip;
using Bflora.Checkpoints;
using Bflora.Config;
using Bflora.Lora;
using Bflora.Models.Llama3;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Transformer = Bflora.Models.Llama3.Transformer;

namespace Bflora.Distributed;

/// <summary>
/// FSDP over a converted Llama-3 at world size N &gt; 1. Units: every transformer block, the token embedding, and the
/// head (final norm + output; with tied embeddings the embedding lives in the head unit). Each rank stores 1/N of every
/// unit as flat bf16 shards (<see cref="FsdpUnit"/>); the model's parameters are permanent views into two gather
/// buffers (even / odd parity), so gathering a unit into its buffer is all it takes to make its module runnable, and
/// at most two gathered units exist at once (the one computing and the prefetched next one), as `bflora plan` budgets.
/// Loading writes only this rank's ranges (safetensors byte ranges, or its slice of the seeded random init).
/// </summary>
public sealed partial class FsdpModel : IDisposable
{
    private readonly ICollectives _c;
    private readonly GatherBuffer[] _buffers;
    private readonly Tensor _gradFull, _gradShard;

    public Transformer Model { get; }
    public ConvertedModel Converted { get; }
    public IReadOnlyList<FsdpUnit> Blocks { get; }
    public FsdpUnit Embedding { get; }
    /// <summary>The final norm, plus the output head when that is gathered whole (not vocabulary-parallel).</summary>
    public FsdpUnit Head { get; }
    /// <summary>The output head's row shards when vocabulary-parallel (the embedding's when tied); else null.</summary>
    public FsdpUnit? OutputRows { get; }
    /// <summary>Every weight trains (training.trainable = "full"); else only the LoRA adapters do.</summary>
    public bool FullTraining => Units[0].FullTraining;
    /// <summary>Embedding lookup and cross-entropy run vocabulary-parallel (the head is frozen and unflipped).</summary>
    public bool VocabParallelHead { get; }
    public IReadOnlyList<FsdpUnit> Units { get; }
    public ICollectives Collectives => _c;
    /// <summary>Blocks are recomputed in backward (parallelism.activation_checkpointing); else their graphs are kept.</summary>
    public bool ActivationCheckpointing { get; private init; } = true;

    private FsdpModel(ICollectives c, Transformer model, ConvertedModel converted, List<FsdpUnit> units, GatherBuffer[] buffers,
        bool vocabParallel)
    {
        VocabParallelHead = vocabParallel;
        _c = c;
        Model = model;
        Converted = converted;
        Units = units;
        Blocks = units.Where(u => u.Name.StartsWith("layers.", StringComparison.Ordinal)).ToList();
        Head = units.Single(u => u.Name == HeadUnit);
        Embedding = units.FirstOrDefault(u => u.Name == EmbeddingUnit) ?? Head;
        OutputRows = vocabParallel ? units.FirstOrDefault(u => u.Name == OutputUnit) ?? Embedding : null;
        _buffers = buffers;
        long loraMax = units.Max(u => u.Trained.PaddedNumel);
        _gradFull = zeros(loraMax, ScalarType.Float32);
        _gradShard = zeros(loraMax / c.WorldSize, ScalarType.Float32);
    }

    private const string HeadUnit = "head", EmbeddingUnit = "tok_embeddings", OutputUnit = "output";

    /// <summary>Bytes of parameters this rank stores between steps: its bf16 shards of every unit (frozen + LoRA).</summary>
    public long ParamBytesPerRank => Units.Sum(u => u.ShardBytes);

    /// <summary>Bytes of the two gather buffers (the gathered unit and the prefetched one).</summary>
    public long GatherBufferBytes => _buffers.Sum(b => 2 * (b.Frozen.numel() + b.Lora.numel()));

    /// <summary>
    /// Builds the sharded model: meta Transformer → parameters as gather-buffer views → conversion (flip seeds and
    /// LoRA init exactly as at world 1; then <paramref name="adapter"/>'s PEFT weights, when given) → LoRA values moved
    /// into shards → this rank's frozen ranges loaded. Training passes <paramref name="masterDtype"/> for the optimizer
    /// slots; evaluation, which has none, passes null. Without <paramref name="convert"/> the Linears stay plain (the
    /// clean model), and the skip patterns still decide whether the head is vocabulary-parallel, as they would if converting.
    /// With <paramref name="fullTraining"/> every weight trains (sharded masters, moments and gradients of the weights).
    /// </summary>
    public static FsdpModel Build(BfloraConfig config, ModelArgs args, string? modelFolder, ConversionOptions options,
        ICollectives c, ScalarType? masterDtype, string? adapter = null, bool convert = true, bool fullTraining = false)
    {
        int world = c.WorldSize;
        // The converter leaves "output" alone when a skip pattern matches it; a plain frozen head can be vocab-parallel.
        // A head that trains is gathered like a block instead (so is the embedding), and its gradient comes from autograd.
        bool vocabParallel = !fullTraining && options.SkipPatterns.Any(p => "output".Contains(p, StringComparison.Ordinal));
        if (vocabParallel && args.VocabSize >= 1 << 24)
            throw new BfloraInputException($"vocabulary of {args.VocabSize} ids: token ids travel as fp32 and must stay below 2^24");
        var model = new Transformer(args, META, ScalarType.BFloat16);
        try
        {
            // Vocab-parallel: the embedding and the output are row-sharded units of their own that are never gathered
            // (tied: one matrix, the embedding's); the head unit is the final norm alone. Otherwise the head unit is
            // norm + output (+ the tied embedding), and the embedding is gathered whole before the lookup.
            string UnitOf(string name) =>
                name.StartsWith("layers.", StringComparison.Ordinal) ? string.Join('.', name.Split('.').Take(2))
                : name.StartsWith("tok_embeddings.", StringComparison.Ordinal) && (vocabParallel || !args.TieEmbeddings) ? EmbeddingUnit
                : name.StartsWith("output.", StringComparison.Ordinal) && vocabParallel ? OutputUnit
                : HeadUnit;
            bool RowSharded(string unit) => vocabParallel && unit is EmbeddingUnit or OutputUnit;
            int ParityOf(string unit) => RowSharded(unit) ? -1
                : unit == EmbeddingUnit ? 1
                : unit == HeadUnit ? args.NLayers % 2
                : int.Parse(unit.Split('.')[1]) % 2;
            var order = Enumerable.Range(0, args.NLayers).Select(i => $"layers.{i}")
                .Concat(vocabParallel
                    ? args.TieEmbeddings ? new[] { EmbeddingUnit, HeadUnit } : new[] { EmbeddingUnit, HeadUnit, OutputUnit }
                    : args.TieEmbeddings ? new[] { HeadUnit } : new[] { EmbeddingUnit, HeadUnit }).ToList();

            // Frozen weights (the tied head is the embedding's tensor, so it is not a member of its own).
            var frozenParams = model.named_parameters()
                .Where(p => !(args.TieEmbeddings && p.name == "output.weight"))
                .Select(p => (p.name, Shape: p.parameter.shape)).ToList();
            var frozen = order.ToDictionary(u => u,
                u => new FlatLayout(frozenParams.Where(p => UnitOf(p.name) == u).Select(p => (p.name, p.Shape)), world,
                    RowSharded(u) ? args.Dim : 1));
            var buffers = new GatherBuffer[2];
            for (int p = 0; p < 2; p++)
                buffers[p] = new GatherBuffer(frozen.Where(f => ParityOf(f.Key) == p).Select(f => f.Value.PaddedNumel).DefaultIfEmpty(0).Max());
            // Row-sharded units stay meta in the module: they are used through their shards, never as parameters.
            foreach (var (unit, layout) in frozen.Where(f => !RowSharded(f.Key)))
                foreach (var m in layout.Members)
                {
                    using var slice = buffers[ParityOf(unit)].Frozen.narrow(0, m.Offset, m.Numel);
                    model.SetParameter(m.Name, slice.view(m.Shape));
                }
            if (args.TieEmbeddings && !vocabParallel) model.TieOutputToEmbedding();
            model.eval();

            var converted = convert ? BitFlipConverter.Convert(model, options) : new ConvertedModel(new FlipStep(), []);
            if (adapter is not null) PeftAdapter.Load(adapter, converted, args);
            var loraParams = new Dictionary<string, List<(string Name, Parameter P)>>();
            foreach (var u in order) loraParams[u] = new();
            foreach (var (name, layer) in converted.Layers.Where(l => l.Layer.Rank > 0))
            {
                loraParams[UnitOf(name + ".weight")].Add(($"{name}.lora_A", layer.LoraA!));
                loraParams[UnitOf(name + ".weight")].Add(($"{name}.lora_B", layer.LoraB!));
            }
            var lora = order.ToDictionary(u => u, u => new FlatLayout(loraParams[u].Select(p => (p.Name, p.P.shape)), world));
            for (int p = 0; p < 2; p++)
                buffers[p].AllocateLora(lora.Where(l => ParityOf(l.Key) == p).Select(l => l.Value.PaddedNumel).DefaultIfEmpty(0).Max());

            var parameters = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
            var units = order.Select(u => new FsdpUnit(u, ParityOf(u), frozen[u], lora[u], loraParams[u].Select(p => p.P).ToList(),
                fullTraining ? frozen[u].Members.Select(m => parameters[m.Name]).ToList() : null)).ToList();
            var fsdp = new FsdpModel(c, model, converted, units, buffers, vocabParallel)
                { ActivationCheckpointing = config.Parallelism.ActivationCheckpointing };
            fsdp.ShardLora(loraParams);
            fsdp.LoadFrozen(config, args, modelFolder);
            if (masterDtype is { } dtype)
                foreach (var u in units) u.CreateSlot(dtype);
            return fsdp;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The converter created every LoRA A/B in full (seeded per layer, the same on every rank); each rank keeps its slice
    /// and the parameter becomes a view into the gather buffer (set_ swaps its storage, so the full copy is freed).
    /// </summary>
    private void ShardLora(Dictionary<string, List<(string Name, Parameter P)>> loraParams)
    {
        using var noGrad = no_grad();
        foreach (var u in Units.Where(u => u.Lora.Numel > 0))
        {
            var buffer = _buffers[u.Parity].Lora;
            for (int i = 0; i < u.Lora.Members.Count; i++)
            {
                var m = u.Lora.Members[i];
                var p = loraParams[u.Name][i].P;
                if (u.Lora.Overlap(m, _c.Rank) is (long from, long to, long count))
                    u.LoraShard.narrow(0, to, count).copy_(p.detach().reshape(-1).narrow(0, from, count));
                using var view = buffer.narrow(0, m.Offset, m.Numel).view(m.Shape);
                p.set_(view);  // set_ returns p itself (TorchSharp 0.107): nothing to dispose
            }
        }
    }

    /// <summary>
    /// Fills this rank's frozen shards. Pretrained: only this rank's element ranges are read from the safetensors.
    /// Random: only this rank's part of the seeded value is generated (identical for any world size).
    /// </summary>
    private void LoadFrozen(BfloraConfig config, ModelArgs args, string? folder)
    {
        var checkpoint = config.Model.Init == "random" ? null : LlamaHfCheckpoint.Open(folder!, args);
        foreach (var u in Units)
        {
            foreach (var m in u.Frozen.Members)
            {
                if (u.Frozen.Overlap(m, _c.Rank) is not (long from, long to, long count)) continue;
                using var target = u.FrozenShard.narrow(0, to, count);
                if (checkpoint is null)
                {
                    ModelInit.RandomSlice(args, m.Name, config.Model.InitSeed, from, target);
                    continue;
                }
                var info = checkpoint.Info(m.Name);
                if (!info.Shape.SequenceEqual(m.Shape))
                    throw new CheckpointFormatException(info.File,
                        $"tensor '{info.Name}' has shape [{string.Join(", ", info.Shape)}], the model expects [{string.Join(", ", m.Shape)}]");
                checkpoint.ReadFlatSlice(m.Name, from, count, target);
            }
        }
    }

    public void Dispose()
    {
        foreach (var u in Units) u.Dispose();
        foreach (var b in _buffers) b.Dispose();
        _gradFull.Dispose();
        _gradShard.Dispose();
        Model.Dispose();
    }
}
