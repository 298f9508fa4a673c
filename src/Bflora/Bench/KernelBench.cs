using System.Diagnostics;
using Bflora.Bitflip;
using Bflora.Devices;
using TorchSharp;
using static TorchSharp.torch;

namespace Bflora.Bench;

/// <summary>Kernel-level measurements: bf16 matmul, copy bandwidth, the flip kernels against copy and the reference.</summary>
public static class KernelBench
{
    /// <summary>The seed's flips: exp and frac at 0.5^16 with a zero-out threshold (w_zero_out_t = 256).</summary>
    public static FlipOp SeedFlip(FlipRng rng) => new(16, 16, 1234, 1235, 256.0, rng);

    /// <summary>Best wall time of reps runs of action (after one untimed warm-up), in seconds.</summary>
    public static double BestOf(int reps, Action action)
    {
        action();
        double best = double.MaxValue;
        for (int i = 0; i < reps; i++)
        {
            var clock = Stopwatch.StartNew();
            action();
            best = Math.Min(best, clock.Elapsed.TotalSeconds);
        }
        return best;
    }

    /// <summary>GFLOP/s of an n×n×n bf16 matmul (2n³ flops) on <paramref name="device"/> (default: the CPU, all torch threads).</summary>
    public static double MatmulGflops(int n, int reps, Device? device = null)
    {
        device ??= CPU;
        using var scope = NewDisposeScope();
        var a = randn(n, n, device: device).to(ScalarType.BFloat16);
        var b = randn(n, n, device: device).to(ScalarType.BFloat16);
        double seconds = BestOf(reps, () =>
        {
            using var c = a.matmul(b);
            ComputeDevice.Synchronize(device);
        });
        return 2.0 * n * n * n / seconds / 1e9;
    }

    /// <summary>Flip and copy timings on the same bf16 tensor of <paramref name="elements"/> elements.</summary>
    public sealed record FlipTimes(double CopySeconds, double FastSeconds, double PhiloxSeconds, long Bytes)
    {
        /// <summary>Read + write bytes per second of the copy.</summary>
        public double CopyGbps => 2.0 * Bytes / CopySeconds / 1e9;
    }

    /// <summary>
    /// copy_ into an existing tensor vs the flip kernels writing into an existing tensor: both read the source once
    /// and write the destination once, so the ratio of times is the ratio of throughputs. Buffers are touched first,
    /// so page faults (which dominate fresh allocations here) are not counted. Copy and fast flip alternate, best of
    /// reps each, so that bursts of load from other processes cannot favour one of them. On a GPU every timed action
    /// ends with a synchronisation, so the clock sees the kernels, not their launches.
    /// </summary>
    public static FlipTimes FlipVsCopy(long elements, int reps, Device? device = null)
    {
        device ??= CPU;
        using var scope = NewDisposeScope();
        var src = randn(elements, device: device).to(ScalarType.BFloat16);
        var dst = zeros_like(src);
        var fastOp = SeedFlip(FlipRng.Fast);
        var philoxOp = SeedFlip(FlipRng.Philox);
        Action Synced(Action action) => () =>
        {
            action();
            ComputeDevice.Synchronize(device);
        };
        double copy = double.MaxValue, fast = double.MaxValue;
        for (int i = 0; i < reps; i++)
        {
            copy = Math.Min(copy, BestOf(1, Synced(() => dst.copy_(src))));
            fast = Math.Min(fast, BestOf(1, Synced(() => BitFlip.FlipInto(src, dst, fastOp))));
        }
        double philox = BestOf(Math.Max(1, reps / 4), Synced(() => BitFlip.FlipInto(src, dst, philoxOp)));
        return new FlipTimes(copy, fast, philox, elements * 2);
    }

    /// <summary>Time of the element-by-element reference flip ÷ the fast kernel's, on the same tensor.</summary>
    public static double FastVsReference(long elements, int reps)
    {
        using var scope = NewDisposeScope();
        var src = randn(elements).to(ScalarType.BFloat16);
        var dst = zeros_like(src);
        var op = SeedFlip(FlipRng.Fast);
        double fast = BestOf(reps, () => BitFlip.FlipInto(src, dst, op));
        double reference = BestOf(Math.Max(1, reps / 2), () => { using var r = ReferenceFlip.Flip(src, op); });
        return reference / fast;
    }
}
