using System.Diagnostics;
using Bflora.Checkpoints;
using Bflora.Config;
using Bflora.Data;
using Bflora.Models.Llama3;
using Bflora.Training;

namespace Bflora.Bench;

/// <summary>A model and batch to time LoRA training steps on (random init, byte vocabulary, bundled corpus).</summary>
public sealed record TrainShape(string Name, ModelArgs Args, int SeqLen, int GlobalBatch)
{
    /// <summary>The demo flavor's model at the demo's LoRA batch (flip_overhead).</summary>
    public static TrainShape Demo(bool quick) =>
        new("demo", Flavors.Get("demo") with { VocabSize = ByteVocab }, quick ? 32 : 128, quick ? 4 : 16);

    /// <summary>
    /// A ~100M-parameter Llama-3-architecture model for MFU: dim 768, 12 layers, 12 heads (no GQA), FFN 2560, so
    /// N (non-embedding) = 12·(4·768² + 3·768·2560 + 2·768) + 768 = 99.1M. Quick mode: the debug flavor.
    /// </summary>
    public static TrainShape M100(bool quick) => quick
        ? new("debug", Flavors.Get("debug") with { VocabSize = ByteVocab }, 32, 4)
        : new("m100", new ModelArgs(Dim: 768, NLayers: 12, NHeads: 12, NKvHeads: 12, FfnHidden: 2560,
            VocabSize: ByteVocab, MaxSeqLen: 4096), 256, 4);

    /// <summary>
    /// The GPU throughput shape, which the PyTorch baseline mirrors exactly: Llama-3.2-1B (flavor 1B: vocab 128256, dim
    /// 2048, 16 layers, 32 heads and 8 KV heads of dim 64, SwiGLU FFN 8192, RMSNorm eps 1e-5, RoPE θ 500000 with
    /// Llama-3.1 scaling factor 32, tied embeddings), random init in bf16, seq_len 2048, <paramref name="batch"/>
    /// windows per step, one process, no accumulation; LoRA r 8, alpha 16 on the 112 Linears of the blocks (the head is
    /// not converted), fp32 masters, AdamW lr 1e-4 without weight decay, clipping at 1.0; the seed's flips
    /// (<see cref="TrainBench"/>). Token ids are bytes of the bundled corpus (the byte tokenizer), which changes nothing
    /// in the cost of a step. Quick mode: the debug flavor at seq_len 32, for tests.
    /// </summary>
    public static TrainShape Llama1B(int batch, bool quick) => quick
        ? new("debug", Flavors.Get("debug") with { VocabSize = ByteVocab }, 32, batch)
        : new("llama-3.2-1b", Flavors.Get("1B"), 2048, batch);

    static int ByteVocab => Tokenizers.Create("byte", null).VocabSize;
}

/// <summary>Opens training sessions on a <see cref="TrainShape"/> and times their optimizer steps.</summary>
public static class TrainBench
{
    /// <summary>The seed's flips (all four components at 0.5^16, thresholds w 256 / x 8192) or none.</summary>
    static string FlipToml(bool on) => on
        ? """
          w_p_exp = 1.52587890625e-05
          w_p_frac = 1.52587890625e-05
          w_zero_out_t = 256.0
          x_p_exp = 1.52587890625e-05
          x_p_frac = 1.52587890625e-05
          x_zero_out_t = 8192.0
          """
        : "w_p_exp = 0.0\nw_p_frac = 0.0\nx_p_exp = 0.0\nx_p_frac = 0.0";

    /// <summary>
    /// A LoRA (r 8) session on <paramref name="shape"/>, for a world of <paramref name="sync"/>'s size: each rank takes
    /// GlobalBatch ÷ world windows per step. The model's config.json goes to <paramref name="scratch"/>;
    /// <paramref name="overrides"/> are `--set section.key=value` strings applied on top (e.g. training.seq_len).
    /// </summary>
    public static TrainingSession Open(TrainShape shape, bool flips, string scratch, IReadOnlyList<string> overrides,
        IGradientSync? sync = null)
    {
        sync ??= SingleProcessSync.Instance;
        string folder = Path.Combine(scratch, shape.Name);
        Directory.CreateDirectory(folder);
        var tokenizer = Tokenizers.Create("byte", null);
        HfConfig.Write(Path.Combine(folder, HfConfig.FileName), shape.Args, tokenizer.BosId, tokenizer.EosId);
        string corpus = BundledFiles.Find(Path.Combine("data", "corpus"));
        string toml = $"""
            [model]
            hf_model_path = "{folder}"
            init = "random"
            tokenizer = "byte"
            [data]
            path = "{corpus}"
            [training]
            seq_len = {shape.SeqLen}
            local_batch_size = {shape.GlobalBatch / sync.WorldSize}
            steps = 1000
            lr = 1e-4
            warmup_steps = 0
            max_norm = 1.0
            trainable = "lora"
            [parallelism]
            fsdp_degree = {sync.WorldSize}
            [lora]
            r = 8
            lora_alpha = 16
            [bitflip]
            {FlipToml(flips)}
            """;
        return TrainingSession.Open(BfloraConfig.FromText(toml, "bench", overrides), sync: sync);
    }

    public static LrSchedule Schedule => new(1e-4, 0, 1000);

    /// <summary>Seconds of one optimizer step.</summary>
    public static double TimeStep(TrainingSession session)
    {
        var clock = Stopwatch.StartNew();
        session.Step(Schedule);
        return clock.Elapsed.TotalSeconds;
    }

    /// <summary>
    /// Best step time with flips on and with flips off, the two sessions' steps interleaved so that the load of other
    /// processes on the machine falls on both alike. The best of several steps estimates a step's own cost; on a
    /// shared machine the median mostly measures the neighbours.
    /// </summary>
    public static (double On, double Off) FlipsOnVsOff(TrainShape shape, string scratch, IReadOnlyList<string> overrides,
        int warmup, int steps)
    {
        using var on = Open(shape, flips: true, scratch, overrides);
        using var off = Open(shape, flips: false, scratch, overrides);
        for (int i = 0; i < warmup; i++) { TimeStep(on); TimeStep(off); }
        var onTimes = new List<double>();
        var offTimes = new List<double>();
        for (int i = 0; i < steps; i++)
        {
            onTimes.Add(TimeStep(on));
            offTimes.Add(TimeStep(off));
        }
        return (onTimes.Min(), offTimes.Min());
    }

    /// <summary>
    /// Global tokens per second of a session's best step out of <paramref name="steps"/> after <paramref name="warmup"/>
    /// (best, for the reason given at <see cref="FlipsOnVsOff"/>). Ranks meet in every step's gradient all-reduce, so
    /// rank 0's step time is the job's.
    /// </summary>
    public static double TokensPerSecond(TrainingSession session, int warmup, int steps)
    {
        var best = BestStep(session, warmup, steps);
        return best.Tokens / best.Seconds;
    }

    /// <summary>The fastest of <paramref name="steps"/> steps after the warm-up.</summary>
    public static StepResult BestStep(TrainingSession session, int warmup, int steps)
    {
        for (int i = 0; i < warmup; i++) session.Step(Schedule);
        StepResult? best = null;
        for (int i = 0; i < steps; i++)
        {
            var step = session.Step(Schedule);
            if (best is null || step.Seconds < best.Seconds) best = step;
        }
        return best ?? throw new ArgumentException("at least one timed step is needed", nameof(steps));
    }

    /// <summary>
    /// Model FLOP utilisation: 6·N·tokens/s ÷ the peak, N = the non-embedding parameters (the usual training estimate,
    /// which leaves out attention scores and the output head).
    /// </summary>
    public static double Mfu(long nonEmbeddingParams, double tokensPerSecond, double peakFlops) =>
        6.0 * nonEmbeddingParams * tokensPerSecond / peakFlops;
}
