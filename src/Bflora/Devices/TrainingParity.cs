using Bflora.Bench;
using Bflora.Training;

namespace Bflora.Devices;

/// <summary>
/// A tiny LoRA training run on a device against the same run on the CPU: the part of the GPU test subset that covers
/// everything besides the flip kernels (placement, autograd, the fused layer, AdamW, clipping). The masks are the same
/// on both (functions of seed and index), but the matmuls round differently, so the losses must agree within a bf16
/// tolerance; a run with the flips off must not, or the comparison could not see a device that skipped them.
/// </summary>
public static class TrainingParity
{
    /// <summary>Relative loss difference allowed per step: a few bf16 ulps (2^-8) of rounding drift.</summary>
    public const double Tolerance = 1e-2;

    const int Steps = 4;

    /// <summary>Strong flips, so that every step drops elements and the straight-through masks matter.</summary>
    static readonly string[] StrongFlips =
    {
        "bitflip.w_p_exp=0.0625", "bitflip.w_p_frac=0.125", "bitflip.w_zero_out_t=4.0",
        "bitflip.x_p_exp=0.0625", "bitflip.x_p_frac=0.125", "bitflip.x_zero_out_t=64.0",
    };

    public static bool Run(string device, TextWriter log)
    {
        var shape = TrainShape.Demo(quick: true);
        string scratch = Path.Combine(Path.GetTempPath(), $"bflora-parity-{Environment.ProcessId}");
        try
        {
            var cpu = Losses(shape, scratch, "cpu", flips: true);
            var onDevice = Losses(shape, scratch, device, flips: true);
            var cpuOff = Losses(shape, scratch, "cpu", flips: false);
            double worst = cpu.Zip(onDevice, Relative).Max(), separation = cpu.Zip(cpuOff, Relative).Max();
            log.WriteLine($"losses cpu [{Format(cpu)}], {device} [{Format(onDevice)}], cpu without flips [{Format(cpuOff)}]");
            bool agree = worst <= Tolerance, visible = separation > 2 * Tolerance;
            log.WriteLine($"{(agree ? "PASS" : "FAIL")} training_losses_match_cpu {device}: largest relative difference " +
                          $"{worst:G3} (tolerance {Tolerance})");
            log.WriteLine($"{(visible ? "PASS" : "FAIL")} training_flips_change_the_losses: {separation:G3} without flips");
            return agree && visible;
        }
        finally
        {
            if (Directory.Exists(scratch)) Directory.Delete(scratch, recursive: true);
        }
    }

    static double[] Losses(TrainShape shape, string scratch, string device, bool flips)
    {
        var overrides = new List<string> { $"training.device=\"{device}\"" };
        if (flips) overrides.AddRange(StrongFlips);
        using var session = TrainBench.Open(shape, flips, scratch, overrides);
        return Enumerable.Range(0, Steps).Select(_ => session.Step(TrainBench.Schedule).Loss).ToArray();
    }

    static double Relative(double a, double b) => Math.Abs(a - b) / Math.Max(1.0, Math.Abs(a));

    static string Format(double[] losses) => string.Join(", ", losses.Select(l => l.ToString("F4")));
}
