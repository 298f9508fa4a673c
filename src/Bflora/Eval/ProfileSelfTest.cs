using Bflora.Bitflip;
using static TorchSharp.torch;

namespace Bflora.Eval;

/// <summary>
/// `eval --profile`'s counting on a device held to the CPU's word loop, bin for bin: part of the GPU test subset
/// (`bflora selftest-gpu`), which the CPU tests also run with the tensor ops on the CPU.
/// </summary>
public static class ProfileSelfTest
{
    public static bool Run(Device device, TextWriter log)
    {
        using var scope = NewDisposeScope();
        // Every bf16 pattern (both zeros, subnormals, ±Inf, every NaN) in a shuffled order, part of them twice, and
        // fp32 values of both signs across the exponent range, which round to bf16 on the way.
        var patterns = Enumerable.Range(0, (1 << 16) + 12345).Select(i => (uint)((i * 40503) & 0xFFFF)).ToArray();
        var bf16 = TensorBits.FromWords(patterns, [patterns.LongLength], FlipFormat.BFloat16);
        var generator = new Generator(5);
        var fp32 = randn([200_000], generator: generator).mul_(exp2(randint(-130, 128, [200_000], generator: generator)));

        var loop = new MagnitudeHistogram();
        ushort loopMax = Math.Max(loop.AddTensor(bf16), loop.AddTensor(fp32));
        var onDevice = new MagnitudeHistogram();
        ushort deviceMax;
        using (var counts = new DeviceBinCounts(device))
        {
            counts.Add(bf16.to(device));
            counts.Add(fp32.to(device));
            deviceMax = counts.MoveInto(onDevice);
        }
        int differ = Enumerable.Range(0, MagnitudeHistogram.Bins).Count(b => loop.CountOf((ushort)b) != onDevice.CountOf((ushort)b));
        bool pass = differ == 0 && loop.Count == onDevice.Count && loopMax == deviceMax;
        log.WriteLine($"{(pass ? "PASS" : "FAIL")} profile_histogram {device.type}: {onDevice.Count} of {loop.Count} values counted, " +
                      $"{differ} bins differ, largest bin 0x{deviceMax:X4} (CPU 0x{loopMax:X4})");
        return pass;
    }
}
