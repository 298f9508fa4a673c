using System.Text.Json;
using System.Text.Json.Serialization;
using Bflora.Devices;
using Bflora.Training;
using TorchSharp;

namespace Bflora.Bench;

/// <summary>One throughput measurement: LoRA training steps of a <see cref="TrainShape"/> on one device.</summary>
public sealed record ThroughputResult(
    [property: JsonPropertyName("device")] string Device,
    [property: JsonPropertyName("shape")] string Shape,
    [property: JsonPropertyName("seq_len")] int SeqLen,
    [property: JsonPropertyName("batch")] int Batch,
    [property: JsonPropertyName("lora_r")] int LoraR,
    [property: JsonPropertyName("params")] long Params,
    [property: JsonPropertyName("non_embedding_params")] long NonEmbeddingParams,
    [property: JsonPropertyName("timed_steps")] int TimedSteps,
    [property: JsonPropertyName("step_s")] double StepSeconds,
    [property: JsonPropertyName("step_queued_s")] double StepQueuedSeconds,
    [property: JsonPropertyName("tokens_per_s")] double TokensPerSecond,
    [property: JsonPropertyName("peak_tflops")] double PeakTflops,
    [property: JsonPropertyName("peak_source")] string PeakSource,
    [property: JsonPropertyName("mfu")] double Mfu,
    [property: JsonPropertyName("tokens_per_s_flips_off")] double TokensPerSecondFlipsOff,
    [property: JsonPropertyName("flip_overhead")] double FlipOverhead,
    [property: JsonPropertyName("copy_gbps")] double CopyGbps,
    [property: JsonPropertyName("bitflip_vs_copy")] double BitflipVsCopy,
    [property: JsonPropertyName("bitflip_philox_vs_copy")] double BitflipPhiloxVsCopy,
    [property: JsonPropertyName("device_memory_used_gib")] double? DeviceMemoryUsedGib)
{
    public string ToJsonLine() => JsonSerializer.Serialize(this);
}

/// <summary>
/// `bflora bench --device cuda` (or `--throughput` on any device): the training throughput of one shape, the number a
/// PyTorch baseline on the same GPU is compared with. The step time is the best of the timed steps (see
/// <see cref="TrainBench.FlipsOnVsOff"/>); each step ends with a device synchronisation, so it includes all its kernels.
/// </summary>
public static class DeviceThroughput
{
    /// <param name="overrides">`--set` strings for the session's config; training.device among them picks the device.</param>
    /// <param name="peakTflops">The peak for MFU; null measures a bf16 matmul on the session's device.</param>
    public static ThroughputResult Run(TrainShape shape, IReadOnlyList<string> overrides, double? peakTflops, bool quick,
        TextWriter log)
    {
        if (peakTflops is { } given && !(given > 0))
            throw new BfloraInputException($"--peak-tflops must be positive, got {peakTflops}");
        string scratch = Path.Combine(Path.GetTempPath(), $"bflora-bench-{Environment.ProcessId}");
        try
        {
            // The flips-on session is measured and released before the flips-off one is built: one model at a time.
            var session = TrainBench.Open(shape, flips: true, scratch, overrides);
            var device = session.Device;
            double peak, tokensPerSecond;
            StepResult best;
            double? memory;
            long tokens, n = session.Args.NonEmbeddingParams, total = session.Args.TotalParams;
            var t = session.Config.Training;
            int r = session.Config.Lora.R, timed = quick ? 2 : 5, warmup = quick ? 1 : 2;
            using (session)
            {
                log.WriteLine($"bench: {shape.Name} on {device}, seq {t.SeqLen} x batch {t.LocalBatchSize}, " +
                              $"{torch.get_num_threads()} torch threads{(quick ? ", quick" : "")}");
                peak = peakTflops ?? MeasuredPeakTflops(device, quick);
                log.WriteLine($"  peak = {peak:G4} TFLOP/s ({(peakTflops is null ? "measured bf16 matmul" : "given")})");
                best = TrainBench.BestStep(session, warmup, steps: timed);
                tokens = best.Tokens;
                tokensPerSecond = tokens / best.Seconds;
                memory = ComputeDevice.MemoryInUse(device) / (double)(1L << 30);
            }
            double offSeconds;
            using (var off = TrainBench.Open(shape, flips: false, scratch, overrides))
                offSeconds = TrainBench.BestStep(off, warmup, steps: timed).Seconds;
            double seconds = best.Seconds;
            log.WriteLine($"  step {seconds * 1e3:F1} ms with flips (forward and backward queued at {best.QueuedSeconds * 1e3:F1} ms), " +
                          $"{offSeconds * 1e3:F1} ms without");
            // The seed's flips on one large bf16 tensor: 128 Mi elements on a GPU, where smaller ones time launches.
            var flips = KernelBench.FlipVsCopy(quick ? 1L << 20 : 128L << 20, quick ? 2 : 10, device);
            return new ThroughputResult(device.ToString(), shape.Name, t.SeqLen, t.LocalBatchSize, r, total, n, timed,
                seconds, best.QueuedSeconds, tokensPerSecond, peak, peakTflops is null ? "measured" : "given",
                TrainBench.Mfu(n, tokensPerSecond, peak * 1e12), tokens / offSeconds, seconds / offSeconds - 1,
                flips.CopyGbps, flips.CopySeconds / flips.FastSeconds, flips.CopySeconds / flips.PhiloxSeconds, memory);
        }
        finally
        {
            if (Directory.Exists(scratch)) Directory.Delete(scratch, recursive: true);
        }
    }

    /// <summary>
    /// The bf16 matmul rate of the device. A GPU needs a large product to approach its peak (8192³ here); the CPU takes
    /// the size the CPU bench uses.
    /// </summary>
    private static double MeasuredPeakTflops(TorchSharp.torch.Device device, bool quick)
    {
        bool gpu = device.type == DeviceType.CUDA;
        int n = gpu ? 8192 : quick ? 512 : 2048;
        return KernelBench.MatmulGflops(n, gpu ? 20 : quick ? 2 : 5, device) / 1e3;
    }
}
