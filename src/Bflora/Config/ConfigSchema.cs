namespace Bflora.Config;

/// <summary>
/// Every accepted key with its type, range and target. Loading walks the parsed TOML against this table, so an
/// unknown key, a wrong type or an out-of-range value is reported with the key's full name.
/// </summary>
internal sealed record ConfigKey(string Path, string TypeName, Func<object, object?> Convert, Action<BfloraConfig, object> Apply)
{
    public string Section => Path[..Path.IndexOf('.')];
    public string Key => Path[(Path.IndexOf('.') + 1)..];
}

internal static class ConfigSchema
{
    public static readonly IReadOnlyList<ConfigKey> Keys = new[]
    {
        Text("model.flavor", (c, v) => c.Model.Flavor = v),
        Text("model.hf_model_path", (c, v) => c.Model.HfModelPath = v),
        Choice("model.init", new[] { "pretrained", "random" }, (c, v) => c.Model.Init = v),
        Integer("model.init_seed", 0, (c, v) => c.Model.InitSeed = v),
        Choice("model.tokenizer", new[] { "llama3", "byte" }, (c, v) => c.Model.Tokenizer = v),
        Choice("model.rope_scaling", new[] { "auto", "llama3", "none" }, (c, v) => c.Model.RopeScaling = v),

        Choice("training.dtype", new[] { "bfloat16" }, (c, v) => c.Training.Dtype = v),
        Choice("training.mixed_precision_param", new[] { "bfloat16" }, (c, v) => c.Training.MixedPrecisionParam = v),
        Choice("training.mixed_precision_reduce", new[] { "float32", "bfloat16" }, (c, v) => c.Training.MixedPrecisionReduce = v),
        Int32("training.seq_len", 1, (c, v) => c.Training.SeqLen = v),
        Int32("training.local_batch_size", 1, (c, v) => c.Training.LocalBatchSize = v),
        Int32("training.gradient_accumulation_steps", 1, (c, v) => c.Training.GradientAccumulationSteps = v),
        Int32("training.steps", 1, (c, v) => c.Training.Steps = v),
        Real("training.lr", 0, null, false, (c, v) => c.Training.Lr = v),
        Real("training.weight_decay", 0, null, false, (c, v) => c.Training.WeightDecay = v),
        Int32("training.warmup_steps", 0, (c, v) => c.Training.WarmupSteps = v),
        Real("training.max_norm", 0, null, true, (c, v) => c.Training.MaxNorm = v),
        Int32("training.log_freq", 1, (c, v) => c.Training.LogFreq = v),
        Int32("training.save_freq", 1, (c, v) => c.Training.SaveFreq = v),
        Choice("training.trainable", new[] { "lora", "full" }, (c, v) => c.Training.Trainable = v),
        Choice("training.master_dtype", new[] { "float32", "bfloat16" }, (c, v) => c.Training.MasterDtype = v),
        Integer("training.seed", 0, (c, v) => c.Training.Seed = v),
        Choice("training.device", new[] { "cpu", "cuda" }, (c, v) => c.Training.Device = v),
        Flag("training.skip_nonfinite", (c, v) => c.Training.SkipNonfinite = v),

        Int32("parallelism.fsdp_degree", 1, (c, v) => c.Parallelism.FsdpDegree = v),
        Flag("parallelism.activation_checkpointing", (c, v) => c.Parallelism.ActivationCheckpointing = v),

        Int32("lora.r", 0, (c, v) => c.Lora.R = v),
        Real("lora.lora_alpha", 0, null, true, (c, v) => c.Lora.LoraAlpha = v),

        Real("bitflip.w_p_exp", 0, 1, false, (c, v) => c.Bitflip.WPExp = v),
        Real("bitflip.w_p_frac", 0, 1, false, (c, v) => c.Bitflip.WPFrac = v),
        Real("bitflip.w_zero_out_t", 0, null, true, (c, v) => c.Bitflip.WZeroOutT = v),
        Real("bitflip.x_p_exp", 0, 1, false, (c, v) => c.Bitflip.XPExp = v),
        Real("bitflip.x_p_frac", 0, 1, false, (c, v) => c.Bitflip.XPFrac = v),
        Real("bitflip.x_zero_out_t", 0, null, true, (c, v) => c.Bitflip.XZeroOutT = v),
        Integer("bitflip.base_seed", 0, (c, v) => c.Bitflip.BaseSeed = v),
        TextList("bitflip.skip_patterns", (c, v) => c.Bitflip.SkipPatterns = v),
        Choice("bitflip.rng", new[] { "fast", "philox" }, (c, v) => c.Bitflip.Rng = v),

        Text("data.path", (c, v) => c.Data.Path = v),
        Text("data.text_field", (c, v) => c.Data.TextField = v),

        Text("checkpoint.folder", (c, v) => c.Checkpoint.Folder = v),
    };

    public static ConfigKey? Find(string section, string key) =>
        Keys.FirstOrDefault(k => k.Section == section && k.Key == key);

    public static IEnumerable<string> Sections => Keys.Select(k => k.Section).Distinct();

    private static ConfigKey Text(string path, Action<BfloraConfig, string> apply) =>
        new(path, "a string", v => v as string, (c, v) => apply(c, (string)v));

    private static ConfigKey Choice(string path, string[] allowed, Action<BfloraConfig, string> apply) =>
        new(path, $"one of \"{string.Join("\", \"", allowed)}\"",
            v => v is string s && allowed.Contains(s) ? s : null, (c, v) => apply(c, (string)v));

    private static ConfigKey Flag(string path, Action<BfloraConfig, bool> apply) =>
        new(path, "true or false", v => v is bool b ? b : null, (c, v) => apply(c, (bool)v));

    private static ConfigKey TextList(string path, Action<BfloraConfig, List<string>> apply) =>
        new(path, "an array of strings",
            v => v is IEnumerable<object> items && v is not string && items.All(i => i is string)
                ? items.Cast<string>().ToList() : null,
            (c, v) => apply(c, (List<string>)v));

    private static ConfigKey Integer(string path, long min, Action<BfloraConfig, long> apply, long max = long.MaxValue) =>
        new(path, $"an integer ≥ {min}",
            v => v is long l ? (l >= min && l <= max ? l : OutOfRange.Instance) : null,
            (c, v) => apply(c, (long)v));

    private static ConfigKey Int32(string path, long min, Action<BfloraConfig, int> apply) =>
        Integer(path, min, (c, v) => apply(c, (int)v), int.MaxValue);

    /// <summary>A float key; an integer is accepted (TOML writes 256 for 256.0).</summary>
    private static ConfigKey Real(string path, double min, double? max, bool exclusiveMin, Action<BfloraConfig, double> apply)
    {
        string range = (exclusiveMin ? $"> {min}" : $"≥ {min}") + (max is null ? "" : $" and ≤ {max}");
        return new(path, $"a number {range}", v =>
        {
            double? d = v switch { double x => x, long l => l, _ => null };
            if (d is null) return null;
            bool ok = !double.IsNaN(d.Value) && (exclusiveMin ? d > min : d >= min) && (max is null || d <= max);
            return ok ? d.Value : OutOfRange.Instance;
        }, (c, v) => apply(c, (double)v));
    }
}

/// <summary>Marks a value of the right type outside its range (distinct from a type error).</summary>
internal sealed class OutOfRange
{
    public static readonly OutOfRange Instance = new();
}
