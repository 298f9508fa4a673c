using Bflora.Bitflip.Cuda;
using TorchSharp;
using static TorchSharp.torch;

namespace Bflora.Bitflip;

/// <summary>
/// The flip engine of one device held to known answers and to the CPU reference, one "PASS|FAIL name" line per
/// check: the GPU test subset (hidden command `bflora selftest-gpu`), which the CPU tests also run on the CPU engine.
/// The known answers are SEMANTICS.md §1's, checked against the original Triton kernel.
/// </summary>
public static class FlipSelfTest
{
    /// <summary>Philox4x32-10 of counter (c0, 0, 0, 0) and key (k0, 0): Random123's published vectors.</summary>
    internal static readonly (uint Key0, uint Counter0, uint[] Words)[] PhiloxAnswers =
    {
        (0, 0, new[] { 0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u }),
        (0, 1, new[] { 0xf8e4cca4u, 0x5cb200dbu, 0xb1a574ebu, 0x097eff67u }),
        (40, 0, new[] { 0xe995cd80u, 0x7572d325u, 0x193c3e23u, 0xef300ab2u }),
    };

    internal static readonly (int Index, uint Bits)[] FirstFlipsBf16N12 =
    {
        (880, 0x0020), (1004, 0x8000), (1159, 0x0002), (1750, 0x0800),
        (1775, 0x0040), (1913, 0x0020), (1930, 0x2000), (2337, 0x0040),
    };

    public static bool Run(Device device, TextWriter log)
    {
        using var scope = torch.NewDisposeScope();
        bool ok = true;
        void Report(string name, bool pass, string detail = "")
        {
            log.WriteLine($"{(pass ? "PASS" : "FAIL")} {name}{(pass || detail.Length == 0 ? "" : ": " + detail)}");
            ok &= pass;
        }

        if (device.type == DeviceType.CUDA)
            log.WriteLine($"flip kernels: {CudaFlipLauncher.For(device.index).Description}");

        // fp32 zeros flipped with both components under one seed show the AND of the first n Philox words whole
        // (the exp and frac masks together cover all 32 bits).
        foreach (var (key0, counter0, words) in PhiloxAnswers)
            for (int n = 1; n <= 4; n++)
            {
                var op = new FlipOp(n, n, (int)key0, (int)key0, null, FlipRng.Philox);
                uint got = Words(BitFlip.Flip(torch.zeros(counter0 + 1, ScalarType.Float32, device: device), op))[counter0];
                uint expected = words.Take(n).Aggregate(0xFFFFFFFFu, (a, w) => a & w);
                Report($"philox_kat key {key0} counter {counter0} n {n}", got == expected, $"0x{got:x8}, expected 0x{expected:x8}");
            }

        var bf16 = Words(BitFlip.Flip(torch.zeros(4096, ScalarType.BFloat16, device: device), new FlipOp(12, 12, 42, 43, null, FlipRng.Philox)));
        var firstFlips = Enumerable.Range(0, 2338).Where(i => bf16[i] != 0).Select(i => (i, bf16[i])).ToArray();
        Report("philox_bf16_zeros_n12_first_flips", firstFlips.SequenceEqual(FirstFlipsBf16N12));

        foreach (var rng in new[] { FlipRng.Fast, FlipRng.Philox })
        foreach (var fmt in new[] { FlipFormat.BFloat16, FlipFormat.Float16, FlipFormat.Float32 })
        foreach (long offset in new long[] { 0, 70_001, (1L << 32) + 3 })
        {
            var words = RandomWords(fmt, 70_001, seed: (int)offset + (int)fmt);
            var op = new FlipOp(3, 5, 1234 + (int)offset, -5, 1.5, rng);
            var expected = ReferenceFlip.Apply(words, fmt, op, offset);
            var x = TensorBits.FromWords(words, new long[] { words.Length }, fmt).to(device);
            var y = BitFlip.Flip(x, op, offset);
            Report($"flip_equals_reference {rng} {fmt} offset {offset}", expected.SequenceEqual(Words(y)));
            var inPlace = x.clone();
            BitFlip.FlipInto(inPlace, inPlace, op, offset);
            Report($"flip_in_place_equals_reference {rng} {fmt} offset {offset}", expected.SequenceEqual(Words(inPlace)));
        }

        foreach (var rng in new[] { FlipRng.Fast, FlipRng.Philox })
        {
            var words = RandomWords(FlipFormat.BFloat16, 200_003, seed: 5);
            var op = new FlipOp(2, 4, 31, 32, 1.5, rng);
            var cpuX = TensorBits.FromWords(words, new long[] { words.Length }, FlipFormat.BFloat16);
            var cpuGrad = torch.randn(words.Length, generator: new Generator(7)).to(ScalarType.BFloat16);
            var x = cpuX.to(device);
            var grad = cpuGrad.to(device);
            var cpuDst = torch.empty_like(cpuX);
            var dst = torch.empty_like(x);
            var cpuDropped = BitFlip.FlipIntoRecordingDropped(cpuX, cpuDst, op);
            var dropped = BitFlip.FlipIntoRecordingDropped(x, dst, op);
            Report($"recorded_drops {rng}", cpuDropped is not null && dropped is not null
                && Words(cpuDst).SequenceEqual(Words(dst))
                && cpuDropped.data<long>().ToArray().SequenceEqual(dropped.cpu().data<long>().ToArray()));
            var cpuMasked = BitFlip.StraightThroughGradient(cpuX, cpuGrad, op);
            var masked = BitFlip.StraightThroughGradient(x, grad, op);
            Report($"straight_through_gradient {rng}", Words(cpuMasked).SequenceEqual(Words(masked)));
            var recorded = torch.empty_like(x);
            var record = BitFlip.FlipIntoWithDropRecord(x, recorded, op);
            Report($"drop_record_gradient {rng}", record is not null && Words(recorded).SequenceEqual(Words(cpuDst))
                && Words(cpuMasked).SequenceEqual(Words(BitFlip.ZeroWhereDropped_(grad.clone(), record))));
        }
        // The correction from marks is the device kernels' (on the CPU, the tests run it through emulated kernels).
        if (device.type == DeviceType.CUDA || BitFlip.HostKernels is not null)
        {
            double error = LoraCorrectionError(device);
            Report("lora_drop_correction", error <= 1e-5, $"relative error {error:G3}");
        }
        if (device.type == DeviceType.CUDA) CudaFlipLauncher.Synchronize();
        return ok;
    }

    static uint[] Words(Tensor t) => TensorBits.ReadWords(t.cpu());

    /// <summary>
    /// What the LoRA drop correction takes from dA [r, in] and dB [out, r], by plain fp32 matmuls on the CPU: the
    /// dropped positions' (flat indices) part of gᵀx_f, projected onto B and A and scaled by −s.
    /// </summary>
    internal static (Tensor FixA, Tensor FixB) LoraCorrectionByHand(Tensor g, Tensor x2, Tensor a, Tensor b, Tensor dropped,
        double s)
    {
        long outFeatures = b.shape[0], inFeatures = a.shape[1];
        var full = g.@float().t().matmul(x2.@float());
        var atDrops = torch.zeros(outFeatures * inFeatures).index_copy_(0, dropped, full.view(-1).index_select(0, dropped))
            .view(outFeatures, inFeatures);
        return (b.@float().t().matmul(atDrops).mul_(-s), atDrops.matmul(a.@float().t()).mul_(-s));
    }

    /// <summary>
    /// The device's LoRA drop correction (from marks) against fp32 matmuls on the CPU, relative to the correction's
    /// size: 2,000 tokens (31 whole chunks and a remainder), a 300 × 200 weight with 600 drops, rank 8.
    /// </summary>
    static double LoraCorrectionError(Device device)
    {
        const long tokens = 2000, outFeatures = 300, inFeatures = 200, rank = 8;
        const double s = 2.0;
        var gen = new Generator(17);
        Tensor Rand(params long[] shape) => torch.randn(shape, generator: gen).to(ScalarType.BFloat16);
        var (g, x2, a, b) = (Rand(tokens, outFeatures), Rand(tokens, inFeatures), Rand(rank, inFeatures), Rand(outFeatures, rank));
        var dropped = torch.randperm(outFeatures * inFeatures, generator: gen).narrow(0, 0, 600);
        var marks = torch.zeros(outFeatures * inFeatures, ScalarType.Bool).index_fill_(0, dropped, true).view(outFeatures, inFeatures);
        var (expectedA, expectedB) = LoraCorrectionByHand(g, x2, a, b, dropped, s);
        var gradA = torch.zeros(rank, inFeatures, device: device);
        var gradB = torch.zeros(outFeatures, rank, device: device);
        DeviceFlip.CorrectDroppedLoraGradients(gradA, gradB, g.to(device), x2.to(device), a.to(device), b.to(device),
            marks.to(device), s, BitFlip.KernelsFor(gradA));
        double err = Math.Sqrt(gradA.cpu().sub(expectedA).pow(2).sum().item<float>() + gradB.cpu().sub(expectedB).pow(2).sum().item<float>());
        double scale = Math.Sqrt(expectedA.pow(2).sum().item<float>() + expectedB.pow(2).sum().item<float>());
        return err / scale;
    }

    /// <summary>Uniformly random words of a format: every pattern, NaNs and infinities included.</summary>
    internal static uint[] RandomWords(FlipFormat fmt, int count, int seed)
    {
        var rng = new Random(seed);
        var words = new uint[count];
        for (int i = 0; i < count; i++)
            words[i] = FlipFormats.WordBits(fmt) == 16 ? (uint)rng.Next(0x10000) : (uint)rng.NextInt64(0x1_0000_0000L);
        return words;
    }
}
