namespace Bflora.Config;

public sealed class ModelSection
{
    public string? Flavor { get; set; }
    public string? HfModelPath { get; set; }
    public string Init { get; set; } = "pretrained";
    public long InitSeed { get; set; }
    public string Tokenizer { get; set; } = "llama3";
    public string RopeScaling { get; set; } = "auto";
}

public sealed class TrainingSection
{
    public string Dtype { get; set; } = "bfloat16";
    public string MixedPrecisionParam { get; set; } = "bfloat16";
    public string MixedPrecisionReduce { get; set; } = "float32";
    public int SeqLen { get; set; } = 2048;
    public int LocalBatchSize { get; set; } = 1;
    public int GradientAccumulationSteps { get; set; } = 1;
    public int Steps { get; set; } = 20;
    public double Lr { get; set; } = 2e-4;
    public double WeightDecay { get; set; }
    public int WarmupSteps { get; set; }
    public double MaxNorm { get; set; } = 1.0;
    public int LogFreq { get; set; } = 1;
    public int SaveFreq { get; set; } = 500;
    public string Trainable { get; set; } = "lora";
    public string MasterDtype { get; set; } = "float32";
    public long Seed { get; set; }
    public string Device { get; set; } = "cpu";
    public bool SkipNonfinite { get; set; }
}

public sealed class ParallelismSection
{
    public int FsdpDegree { get; set; } = 1;
    /// <summary>
    /// Sharded runs recompute each block in backward (true, the seed's way); false keeps every block's activations, as
    /// one process does, and only gathers the block's weights again.
    /// </summary>
    public bool ActivationCheckpointing { get; set; } = true;
}

public sealed class LoraSection
{
    public int R { get; set; } = 32;
    public double LoraAlpha { get; set; } = 32;
}

/// <summary>Probabilities 0 mean "component off"; a missing threshold means "no zero-out".</summary>
public sealed class BitflipSection
{
    public double WPExp { get; set; }
    public double WPFrac { get; set; }
    public double? WZeroOutT { get; set; }
    public double XPExp { get; set; }
    public double XPFrac { get; set; }
    public double? XZeroOutT { get; set; }
    /// <summary>Unset: training uses 0; `eval --bitflip` without an adapter uses 42, as the original's eval does.</summary>
    public long? BaseSeed { get; set; }
    public List<string> SkipPatterns { get; set; } = new() { "output" };
    public string Rng { get; set; } = "fast";

    public bool AnyFlip => WPExp > 0 || WPFrac > 0 || XPExp > 0 || XPFrac > 0;
}

public sealed class DataSection
{
    public string Path { get; set; } = "Cheng98/fineweb-edu-1.25B";
    public string TextField { get; set; } = "text";
}

public sealed class CheckpointSection
{
    public string? Folder { get; set; }
}

public static class BitflipSectionExtensions
{
    /// <summary>
    /// The flip settings of this section; <paramref name="seedOverride"/> replaces base_seed (eval --bitflip-seed),
    /// and <paramref name="unsetSeed"/> stands in when the config has none.
    /// </summary>
    public static Bitflip.FlipSettings ToFlipSettings(this BitflipSection s, long? seedOverride = null, long unsetSeed = 0) =>
        new(s.WPExp, s.WPFrac, s.WZeroOutT, s.XPExp, s.XPFrac, s.XZeroOutT, seedOverride ?? s.BaseSeed ?? unsetSeed,
            s.Rng == "philox" ? Bitflip.FlipRng.Philox : Bitflip.FlipRng.Fast);
}
