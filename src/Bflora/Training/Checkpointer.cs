using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.RegularExpressions;
using Bflora.Checkpoints;
using Bflora.Data;
using Bflora.Lora;
using static TorchSharp.torch;

namespace Bflora.Training;

/// <summary>The JSON part of trainer_state/: everything but tensors needed to continue a run exactly.</summary>
public sealed record TrainerState(
    [property: JsonPropertyName("step")] long Step,
    [property: JsonPropertyName("optimizer_steps")] long OptimizerSteps,
    [property: JsonPropertyName("flip_step")] long FlipStep,
    [property: JsonPropertyName("data_cursor")] WindowCursor DataCursor,
    [property: JsonPropertyName("config_name")] string ConfigName,
    [property: JsonPropertyName("world_size")] int WorldSize,
    [property: JsonPropertyName("trainable")] string Trainable,
    [property: JsonPropertyName("master_dtype")] string MasterDtype,
    [property: JsonPropertyName("unlogged_loss")] UnloggedLoss? Unlogged = null,
    [property: JsonPropertyName("optimizer_slots")] IReadOnlyList<SavedSlot>? OptimizerSlots = null,
    [property: JsonPropertyName("skipped_steps")] long SkippedSteps = 0,
    [property: JsonPropertyName("data")] DataIdentity? Data = null);

/// <summary>Losses of the steps since the last metrics row, so a resumed run's next row averages the same steps.</summary>
public sealed record UnloggedLoss(
    [property: JsonPropertyName("sum")] double Sum,
    [property: JsonPropertyName("steps")] int Steps)
{
    public static readonly UnloggedLoss None = new(0, 0);

    public UnloggedLoss With(double loss) => new(Sum + loss, Steps + 1);

    [JsonIgnore] public double Mean => Sum / Steps;
}

/// <summary>
/// Writes and finds checkpoints under OUT/checkpoints/step-N/. A checkpoint is assembled in a hidden temporary folder
/// and renamed into place, so a folder named step-N is always complete. LoRA runs store a PEFT adapter, full runs an
/// HF-layout model; both add trainer_state/ (masters and AdamW moments as safetensors, plus state.json).
/// </summary>
public static partial class Checkpointer
{
    public const string StateFolder = "trainer_state";
    public const string StateJson = "state.json";
    public const string OptimizerFile = "optimizer.safetensors";

    [GeneratedRegex(@"^step-(\d+)$")]
    private static partial Regex StepFolder();

    public static string Root(string outputFolder) => Path.Combine(outputFolder, "checkpoints");

    /// <summary>The optimizer file of one rank: the plain name at world 1, one file per rank (its shards) above.</summary>
    public static string OptimizerFileOf(int rank, int world) => world == 1 ? OptimizerFile : $"optimizer-rank{rank}-of-{world}.safetensors";

    /// <summary>
    /// Saves the session after its last completed step; returns the checkpoint folder. Sharded: every rank calls it;
    /// rank 0 owns the folder (a temporary name all ranks know), the adapter is gathered to rank 0, each rank writes
    /// its own optimizer shards, and barriers order creation, writing and the final rename.
    /// </summary>
    public static string Save(string outputFolder, TrainingSession session)
    {
        string root = Root(outputFolder);
        var collectives = session.Fsdp?.Collectives;
        bool lead = collectives is null || collectives.Rank == 0;
        string final = Path.Combine(root, $"step-{session.CompletedSteps}");
        string temp = Path.Combine(root, collectives is null
            ? $".step-{session.CompletedSteps}.{Guid.NewGuid():N}.tmp"
            : $".step-{session.CompletedSteps}.sharded.tmp");
        try
        {
            if (lead)
            {
                Directory.CreateDirectory(root);
                if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true);
                Directory.CreateDirectory(Path.Combine(temp, StateFolder));
            }
            collectives?.Barrier();
            WriteModel(temp, session, lead);
            WriteState(Path.Combine(temp, StateFolder), session, lead);
            collectives?.Barrier();
            if (!lead)
            {
                collectives!.Barrier();
                return final;
            }
            if (Directory.Exists(final))
            {
                // A rerun into the same folder replaces its old checkpoint; move it aside first so the swap is short.
                string old = final + $".{Guid.NewGuid():N}.old";
                Directory.Move(final, old);
                Directory.Move(temp, final);
                Directory.Delete(old, recursive: true);
            }
            else
            {
                Directory.Move(temp, final);
            }
            collectives?.Barrier();
            return final;
        }
        finally
        {
            if (lead && Directory.Exists(temp)) Directory.Delete(temp, recursive: true);
        }
    }

    private static void WriteModel(string folder, TrainingSession session, bool lead)
    {
        var config = session.Config;
        if (session.Fsdp is { } fsdp)
        {
            if (session.FullTraining)
            {
                // One HF shard per FSDP unit, each gathered and written before the next: rank 0 never holds the whole model.
                var units = fsdp.GatherWeights()
                    .Select(members => (IReadOnlyList<TensorSource>)members.Select(m => TensorSource.Of(m.Name, m.Value)).ToList());
                if (lead)
                    LlamaHfCheckpoint.ExportShards(folder, units, fsdp.Units.Count, session.Args, session.Tokenizer.BosId, session.Tokenizer.EosId);
                else
                    foreach (var _ in units) { }   // every rank takes part in each unit's gather
                return;
            }
            var adapters = fsdp.GatherAdapters();
            try
            {
                if (lead)
                    PeftAdapter.Save(folder, adapters, session.Args, config.Lora.LoraAlpha,
                        config.Model.HfModelPath ?? config.Model.Flavor ?? config.Name);
            }
            finally
            {
                foreach (var (_, a, b) in adapters)
                {
                    a.Dispose();
                    b.Dispose();
                }
            }
            return;
        }
        if (!session.FullTraining)
        {
            PeftAdapter.Save(folder, session.Converted, session.Args, config.Lora.LoraAlpha,
                config.Model.HfModelPath ?? config.Model.Flavor ?? config.Name);
            return;
        }
        var tensors = new Dictionary<string, Tensor>();
        foreach (var (name, p) in session.Model.named_parameters())
        {
            // Tied heads are written once, under the embedding's name, as HF does for tied Llama models.
            if (name == "output.weight" && session.Args.TieEmbeddings) continue;
            tensors[name] = p.detach();
        }
        LlamaHfCheckpoint.Export(folder, tensors, session.Args, session.Tokenizer.BosId, session.Tokenizer.EosId);
    }

    private static void WriteState(string folder, TrainingSession session, bool lead)
    {
        Directory.CreateDirectory(folder);
        OptimizerState.Write(folder, session);
        if (!lead) return;
        var state = new TrainerState(session.CompletedSteps, session.Optimizer.StepCount, session.Converted.Step.Value,
            session.DataCursor, session.Config.Name, session.Layout.World, session.Config.Training.Trainable,
            session.Config.Training.MasterDtype, session.Unlogged, OptimizerState.Describe(session), session.SkippedSteps,
            session.Data);
        AtomicFile.WriteAllText(Path.Combine(folder, StateJson),
            JsonSerializer.Serialize(state, new JsonSerializerOptions { WriteIndented = true }));
    }

    /// <summary>The complete checkpoint with the most steps, or null if there is none.</summary>
    public static string? Newest(string outputFolder)
    {
        string root = Root(outputFolder);
        if (!Directory.Exists(root)) return null;
        return Directory.GetDirectories(root)
            .Select(d => (Dir: d, Match: StepFolder().Match(Path.GetFileName(d))))
            .Where(x => x.Match.Success && File.Exists(Path.Combine(x.Dir, StateFolder, StateJson)))
            .OrderByDescending(x => long.Parse(x.Match.Groups[1].Value))
            .Select(x => x.Dir)
            .FirstOrDefault();
    }

    /// <summary>
    /// What makes a parsed state.json unusable, or null: JSON cannot say "required" or "not negative", and a field left
    /// out or null would otherwise surface as a crash deep inside the resume.
    /// </summary>
    private static string? Invalid(TrainerState s)
    {
        if (s.Step < 0 || s.OptimizerSteps < 0 || s.FlipStep < 0) return "negative step counts";
        if (s.SkippedSteps < 0 || s.SkippedSteps > s.Step) return $"skipped_steps {s.SkippedSteps} of {s.Step} steps";
        if (s.Data is { Complete: false }) return "data lacks a field or has a negative size";
        if (s.WorldSize < 1) return $"world_size {s.WorldSize}";
        if (s.ConfigName is null || s.Trainable is null || s.MasterDtype is null)
            return "config_name, trainable and master_dtype are required";
        if (s.Unlogged is { } u && (u.Steps < 0 || !double.IsFinite(u.Sum))) return "unlogged_loss is out of range";
        if (s.DataCursor is not { } c) return "data_cursor is required";
        if (c.Carry is null || c.Epoch < 0 || c.WindowInEpoch < 0 || c.Document < 0 || c.Chunk < 0 || c.SkipInChunk < 0)
            return "data_cursor is out of range";
        foreach (var slot in s.OptimizerSlots ?? [])
        {
            if (slot?.Name is null || slot.Members is null || slot.ShardNumel < 0) return "an optimizer slot without name, members or size";
            foreach (var m in slot.Members)
            {
                if (m?.Name is null || m.Shape is null || m.Shape.Any(d => d < 0) || m.Offset < 0)
                    return $"optimizer slot '{slot.Name}' has a member without name or with a negative shape or offset";
                // Checked so that a huge shape cannot wrap around to a plausible element count.
                long numel;
                try { numel = m.Shape.Aggregate(1L, (n, d) => checked(n * d)); }
                catch (OverflowException) { return $"'{m.Name}' has an impossibly large shape"; }
                if (slot.ShardNumel > long.MaxValue / s.WorldSize || m.Offset > slot.ShardNumel * s.WorldSize - numel)
                    return $"'{m.Name}' lies past the end of optimizer slot '{slot.Name}'";
            }
        }
        return null;
    }

    /// <summary>Restores <paramref name="session"/> from the checkpoint folder <paramref name="folder"/>, written at any world size.</summary>
    public static TrainerState Load(string folder, TrainingSession session)
    {
        string stateDir = Path.Combine(folder, StateFolder);
        TrainerState state;
        try
        {
            state = JsonSerializer.Deserialize<TrainerState>(File.ReadAllText(Path.Combine(stateDir, StateJson)))
                    ?? throw new InvalidDataException("empty");
        }
        catch (JsonException e)
        {
            throw new BfloraInputException($"{stateDir}/{StateJson} is not a valid trainer state: {e.Message}");
        }
        if (Invalid(state) is { } problem)
            throw new BfloraInputException($"{stateDir}/{StateJson} is not a valid trainer state: {problem}");
        if (state.MasterDtype != session.Config.Training.MasterDtype)
            throw new BfloraInputException(
                $"the checkpoint keeps {state.MasterDtype} masters, the config says training.master_dtype = \"{session.Config.Training.MasterDtype}\"");
        if (state.Trainable != session.Config.Training.Trainable)
            throw new BfloraInputException($"the checkpoint trained \"{state.Trainable}\", the config says \"{session.Config.Training.Trainable}\"");
        // The cursor counts tokens of the tokenizer it was saved with; under another one it would point nowhere sensible.
        if (state.Data is { } data && data.Tokenizer != session.Data.Tokenizer)
            throw new BfloraInputException(
                $"the checkpoint's data position is in {data.Tokenizer} tokens, the config's tokenizer is {session.Data.Tokenizer}");
        int vocab = session.Tokenizer.VocabSize;
        foreach (int id in state.DataCursor.Carry)
            if (id < 0 || id >= vocab)
                throw new BfloraInputException(
                    $"{stateDir}/{StateJson} is not a valid trainer state: data_cursor holds token id {id}, outside the tokenizer's {vocab} ids");
        OptimizerState.Read(stateDir, state, session);
        session.Restore(state);
        return state;
    }
}
