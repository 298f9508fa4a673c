using System.Diagnostics;
using Bflora.Config;
using Bflora.Data;
using Bflora.Devices;
using Bflora.Distributed;
using Bflora.Eval;
using Bflora.Lora;
using Bflora.Models;
using Bflora.Models.Llama3;
using Parameter = TorchSharp.Modules.Parameter;
using Transformer = Bflora.Models.Llama3.Transformer;
using static TorchSharp.torch;

namespace Bflora.Training;

/// <summary>What one optimizer step did; <paramref name="Skipped"/>: its loss or gradient was not finite, so no update was applied.</summary>
/// <param name="QueuedSeconds">
/// When the host had queued the last backward of the step, from the step's start: on a GPU, near Seconds when the host
/// is what limits the step, well under it when the device is.
/// </param>
public sealed record StepResult(long Step, double Loss, double Lr, double GradNorm, long Tokens, double Seconds,
    bool Skipped = false, double QueuedSeconds = 0);

/// <summary>
/// Everything one training run holds: the converted model, its trainable parameters with their master copies and
/// AdamW state, the window stream and the step count. <see cref="Step"/> runs one optimizer step of SEMANTICS.md §5
/// (with the deliberate differences of DESIGN.md: fp32 masters, gradients averaged over the global batch).
/// </summary>
public sealed class TrainingSession : IDisposable
{
    private readonly IGradientSync _sync;
    private readonly TextSource _source;
    private readonly WindowSplit? _split;
    private WindowReader _reader;

    public BfloraConfig Config { get; }
    public ITokenizer Tokenizer { get; }
    public ModelArgs Args { get; }
    public Transformer Model { get; }
    public ConvertedModel Converted { get; }
    public BatchLayout Layout { get; }
    public AdamW Optimizer { get; }

    /// <summary>Where the model, its adapters, the masters and moments and every batch live (training.device).</summary>
    public Device Device { get; }

    /// <summary>The sharded model and its state at world size &gt; 1 (FSDP); null on the single-process path.</summary>
    public FsdpModel? Fsdp { get; }

    /// <summary>Trainable parameters by name, each with its master slot (same order).</summary>
    public IReadOnlyList<(string Name, Parameter Param)> Trainable { get; }
    public IReadOnlyList<AdamWSlot> Slots { get; }

    /// <summary>
    /// Each slot with the flat layout of the parameters it holds, for checkpoints: one whole parameter at world 1, a
    /// unit's LoRA buffer (this rank's shard of it) under FSDP.
    /// </summary>
    public IReadOnlyList<(AdamWSlot Slot, FlatLayout Layout)> SlotLayouts { get; }

    /// <summary>The single-process optimizer state that <see cref="Slots"/> are views of; null under FSDP.</summary>
    private readonly FlatAdamWSlots? _flat;

    /// <summary>
    /// The trainable parameters' storage (they are views of it, laid out as the masters), so rounding the masters into
    /// them is one copy; null under FSDP.
    /// </summary>
    private readonly Tensor? _flatParams;

    /// <summary>Optimizer steps completed (the k of the last step).</summary>
    public long CompletedSteps { get; private set; }

    public bool FullTraining => Config.Training.Trainable == "full";

    public WindowCursor DataCursor => _reader.Cursor;

    /// <summary>The dataset, tokenizer and window length that <see cref="DataCursor"/> is a position in.</summary>
    public DataIdentity Data { get; }

    /// <summary>Steps whose update was not applied (training.skip_nonfinite), over the whole run, resumes included.</summary>
    public long SkippedSteps { get; set; }

    private TrainingSession(BfloraConfig config, ITokenizer tokenizer, ModelArgs args, Transformer model,
        ConvertedModel converted, IGradientSync sync, TextSource source, WindowSplit? split, FsdpModel? fsdp, Device device)
    {
        Fsdp = fsdp;
        Device = device;
        Config = config;
        Tokenizer = tokenizer;
        Args = args;
        Model = model;
        Converted = converted;
        _sync = sync;
        _source = source;
        _split = split;
        _reader = OpenReader(null);
        Data = DataIdentity.Of(source, config.Model.Tokenizer, tokenizer, config.Training.SeqLen);
        Layout = new BatchLayout(config.Training.LocalBatchSize, config.Training.GradientAccumulationSteps, sync.WorldSize);
        Optimizer = new AdamW(config.Training.WeightDecay);
        Trainable = SelectTrainable(model, FullTraining);
        var dtype = MasterDtype(config.Training.MasterDtype);
        // Sharded: one slot per unit over this rank's shard of its flat LoRA buffer; else views of one flat buffer per
        // state, on the parameters' device, one per parameter.
        if (fsdp is null)
        {
            _flat = new FlatAdamWSlots(Trainable.Select(t => (t.Name, (Tensor)t.Param)).ToList(), dtype, device);
            _flatParams = BindToOneBuffer(Trainable, _flat);
        }
        Slots = fsdp?.Slots ?? _flat!.Views;
        SlotLayouts = fsdp is not null
            ? fsdp.Units.Where(u => u.Slot is not null).Select(u => (u.Slot!, u.Trained)).ToList()
            : Slots.Zip(Trainable, (slot, t) => (slot, new FlatLayout(new[] { (t.Name, t.Param.shape) }, world: 1))).ToList();
    }

    /// <summary>The losses the trainer has not logged yet; kept in checkpoints so a resumed run logs the same rows.</summary>
    public UnloggedLoss Unlogged { get; set; } = UnloggedLoss.None;

    /// <summary>This process's resident bytes just before the model was built: runtime, libraries, tokenizer, data.</summary>
    public long ResidentBeforeModel { get; private init; }

    /// <summary>
    /// Bytes of model parameters this process holds between steps: its bf16 shards under FSDP, else every (unique)
    /// parameter. Gather buffers, masters and optimizer moments are not included.
    /// </summary>
    public long ParamBytesPerRank => Fsdp?.ParamBytesPerRank
        ?? Model.parameters().DistinctBy(p => p.Handle).Sum(p => p.numel() * p.element_size());

    /// <summary>
    /// Builds the model per config, converts its Linears (LoRA r from [lora] in "lora" mode, r = 0 in "full" mode; flips
    /// from [bitflip]) and opens the data: the whole stream, cycling, or with <paramref name="trainSplitOnly"/> only
    /// the training part of the held-out split.
    /// </summary>
    public static TrainingSession Open(BfloraConfig config, bool trainSplitOnly = false, IGradientSync? sync = null)
    {
        sync ??= SingleProcessSync.Instance;
        var t = config.Training;
        MasterDtype(t.MasterDtype);
        var device = ComputeDevice.ForTraining(config);
        if (t.Trainable == "lora" && config.Lora.R <= 0) throw new BfloraInputException("lora.r must be positive for LoRA training");
        if (config.Parallelism.FsdpDegree != sync.WorldSize)
            throw new BfloraInputException(
                $"parallelism.fsdp_degree is {config.Parallelism.FsdpDegree} but the world size is {sync.WorldSize}");

        var (tokenizer, args, modelFolder) = ModelBuilder.Resolve(config);
        var source = DataSources.Open(config);
        var split = trainSplitOnly ? WindowSplit.Compute(source, tokenizer, t.SeqLen) : null;
        int r = t.Trainable == "lora" ? config.Lora.R : 0;
        var options = new ConversionOptions(config.Bitflip.ToFlipSettings(), r, config.Lora.LoraAlpha, config.Bitflip.SkipPatterns, t.Seed);
        long before = ProcessMemory.Resident();
        if (sync.WorldSize > 1 && sync is CollectivesGradientSync { Collectives: var collectives })
        {
            var fsdp = FsdpModel.Build(config, args, modelFolder, options, collectives, MasterDtype(t.MasterDtype),
                fullTraining: t.Trainable == "full");
            try
            {
                fsdp.Model.train();
                return new TrainingSession(config, tokenizer, args, fsdp.Model, fsdp.Converted, sync, source, split, fsdp, device)
                    { ResidentBeforeModel = before };
            }
            catch
            {
                fsdp.Dispose();
                throw;
            }
        }
        var model = ModelBuilder.Build(config, args, modelFolder, device: device);
        try
        {
            var converted = BitFlipConverter.Convert(model, options);
            ComputeDevice.EnsureParametersOn(model, device);
            model.train();
            return new TrainingSession(config, tokenizer, args, model, converted, sync, source, split, null, device)
                { ResidentBeforeModel = before };
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    public static ScalarType MasterDtype(string name) => name switch
    {
        "float32" => ScalarType.Float32,
        "bfloat16" => ScalarType.BFloat16,
        _ => throw new BfloraInputException($"training.master_dtype must be \"float32\" or \"bfloat16\", got \"{name}\""),
    };

    /// <summary>
    /// LoRA mode: exactly the lora_A/lora_B parameters. Full mode: every parameter, the converted layers' frozen weights
    /// included (the flip's straight-through backward carries their gradient). Tied tensors appear once.
    /// </summary>
    private static List<(string, Parameter)> SelectTrainable(Transformer model, bool full)
    {
        var seen = new HashSet<IntPtr>();
        var result = new List<(string, Parameter)>();
        foreach (var (name, p) in model.named_parameters())
        {
            bool train = full || name.EndsWith(".lora_A", StringComparison.Ordinal) || name.EndsWith(".lora_B", StringComparison.Ordinal);
            p.requires_grad = train;
            if (train && seen.Add(p.Handle)) result.Add((name, p));
        }
        return result;
    }

    /// <summary>
    /// One optimizer step k = CompletedSteps + 1 of <paramref name="totalSteps"/>: accumulation micro-batches of forward,
    /// bf16 cross-entropy / (accumulation · world), backward; then gradient reduction, clipping, AdamW at lr·f(k−1),
    /// masters rounded into the bf16 parameters, and the flip step counter + 1.
    /// A non-finite loss or gradient norm (the same on every rank: both are reduced over ranks) leaves the masters and
    /// the AdamW state untouched; the step still counts (its windows and flips are spent) and comes back Skipped, so the
    /// caller decides between stopping and going on (training.skip_nonfinite).
    /// </summary>
    public StepResult Step(LrSchedule schedule)
    {
        if (Fsdp is not null) return ShardedStep(schedule);
        var clock = Stopwatch.StartNew();
        long k = CompletedSteps + 1;
        var globalBatch = Batches.ReadGlobalBatch(_reader, Layout);
        foreach (var (_, p) in Trainable) p.grad = null;
        double divisor = Layout.Accumulation * Layout.World;
        // The losses are read once every micro-batch is queued: a read waits for the device.
        var losses = new List<Tensor>();
        for (int micro = 0; micro < Layout.Accumulation; micro++)
        {
            using var scope = NewDisposeScope();
            var (inputs, labels) = Batches.MicroBatch(globalBatch, Layout, micro, _sync.Rank, Device);
            var logits = Model.call(inputs);
            var loss = TrainLoss.CrossEntropy(logits, labels);
            loss.div(divisor).backward();
            losses.Add(loss.detach().MoveToOuterDisposeScope());
        }
        double queued = clock.Elapsed.TotalSeconds;
        double lossSum = 0;
        foreach (var loss in losses)
        {
            lossSum += loss.item<float>();
            loss.Dispose();
        }

        double lr = schedule.LrAt(k);
        double norm, meanLoss;
        bool skipped;
        using (var scope = NewDisposeScope())
        {
            var flat = _flat!;
            var grads = new[] { flat.Flatten(Trainable.Select(t => t.Param.grad).ToList()) };
            _sync.AllReduceGradients(grads);
            norm = GradientClipping.ClipInPlace(grads, Config.Training.MaxNorm);
            meanLoss = _sync.MeanOverRanks(lossSum / Layout.Accumulation);
            skipped = !double.IsFinite(meanLoss) || !double.IsFinite(norm);
            if (!skipped)
            {
                Optimizer.Step(new[] { flat.Whole }, grads, lr);
                CopyMastersToParameters();
            }
        }
        foreach (var (_, p) in Trainable) p.grad = null;
        Converted.Step.Value++;
        CompletedSteps = k;
        long tokens = (long)Layout.GlobalBatch * Config.Training.SeqLen;
        // The optimizer's kernels may still be queued on a GPU; the step's time includes them.
        ComputeDevice.Synchronize(Device);
        return new StepResult(k, meanLoss, lr, norm, tokens, clock.Elapsed.TotalSeconds, skipped, queued);
    }

    /// <summary>
    /// <see cref="Step"/> under FSDP: each micro-batch's forward/backward (FsdpModel: gather, recompute,
    /// reduce-scatter) leaves LoRA gradients in fp32 shards; clipping uses the global norm; AdamW updates this rank's
    /// master shards, which are rounded into the bf16 shards the next gathers send.
    /// </summary>
    private StepResult ShardedStep(LrSchedule schedule)
    {
        var fsdp = Fsdp!;
        var clock = Stopwatch.StartNew();
        long k = CompletedSteps + 1;
        var globalBatch = Batches.ReadGlobalBatch(_reader, Layout);
        fsdp.ZeroGrads();
        double lossSum = 0;
        double divisor = Layout.Accumulation * Layout.World;
        for (int micro = 0; micro < Layout.Accumulation; micro++)
        {
            using var scope = NewDisposeScope();
            var (inputs, labels) = Batches.MicroBatch(globalBatch, Layout, micro, _sync.Rank);
            lossSum += fsdp.MicroBatch(inputs, labels, divisor);
        }
        double lr = schedule.LrAt(k);
        double norm = fsdp.ClipGradients(Config.Training.MaxNorm);
        double meanLoss = _sync.MeanOverRanks(lossSum / Layout.Accumulation);
        // Both are reduced over ranks, so every rank skips (or not) alike, as on the single-process path.
        bool skipped = !double.IsFinite(meanLoss) || !double.IsFinite(norm);
        if (!skipped)
        {
            Optimizer.Step(Slots, fsdp.GradShards, lr);
            fsdp.CopyMastersToShards();
        }
        Converted.Step.Value++;
        CompletedSteps = k;
        long tokens = (long)Layout.GlobalBatch * Config.Training.SeqLen;
        return new StepResult(k, meanLoss, lr, norm, tokens, clock.Elapsed.TotalSeconds, skipped);
    }

    /// <summary>Rounds each master into its (bf16) parameter, or under FSDP into this rank's bf16 shard.</summary>
    private void CopyMastersToParameters()
    {
        if (Fsdp is not null)
        {
            Fsdp.CopyMastersToShards();
            return;
        }
        using var noGrad = no_grad();
        _flatParams?.copy_(_flat!.Whole.Master);
    }

    /// <summary>
    /// Puts the session where a checkpoint left it, once <see cref="OptimizerState.Read"/> has filled the slots: the
    /// masters rounded into the parameters, step counts, data cursor, flip step.
    /// </summary>
    public void Restore(TrainerState state)
    {
        CopyMastersToParameters();
        Optimizer.StepCount = state.OptimizerSteps;
        CompletedSteps = state.Step;
        SkippedSteps = state.SkippedSteps;
        Converted.Step.Value = state.FlipStep;
        _reader.Dispose();
        _reader = OpenReader(state.DataCursor);
    }

    /// <summary>Moves the parameters' values into one buffer and makes each parameter a view of its part.</summary>
    private static Tensor? BindToOneBuffer(IReadOnlyList<(string Name, Parameter Param)> trainable, FlatAdamWSlots layout)
    {
        if (trainable.Count == 0) return null;
        // The model is built in one dtype and its adapters take their weight's, so one buffer holds them all.
        var dtype = trainable[0].Param.dtype;
        foreach (var (name, p) in trainable)
            if (p.dtype != dtype) throw new InvalidOperationException($"trainable parameter '{name}' is {p.dtype}, the others {dtype}");
        using var noGrad = no_grad();
        var flat = cat(trainable.Select(t => t.Param.detach().reshape(-1)).ToList());
        for (int i = 0; i < trainable.Count; i++)
        {
            using var part = layout.Part(flat, i);
            trainable[i].Param.set_(part);
        }
        return flat;
    }

    private WindowReader OpenReader(WindowCursor? from) =>
        _split is not null
            ? _split.OpenTrain(_source, Tokenizer, Config.Training.SeqLen, from)
            : new WindowReader(_source, Tokenizer, Config.Training.SeqLen, from, cycle: true);

    public void Dispose()
    {
        _reader.Dispose();
        if (Fsdp is not null)
        {
            Fsdp.Dispose();
            return;
        }
        _flat!.Dispose();
        _flatParams?.Dispose();
        Model.Dispose();
    }
}
