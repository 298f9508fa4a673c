using static TorchSharp.torch;

namespace Bflora.Models.Llama3;

/// <summary>
/// Rotary position embedding in the complex, interleaved-pair convention of Meta's and torchtitan's Llama: channels
/// (2j, 2j+1) of a head form one complex number rotated by position·freq_j. HF checkpoints use the rotate-half
/// convention, which is why the loader permutes q/k rows.
/// </summary>
public static class Rope
{
    /// <summary>Per-pair inverse frequencies θ^(-2j/d), with Llama-3.1 wavelength-dependent scaling when given.</summary>
    public static double[] Frequencies(int headDim, double theta, RopeScaling? scaling)
    {
        var freqs = new double[headDim / 2];
        for (int j = 0; j < freqs.Length; j++)
            freqs[j] = 1.0 / Math.Pow(theta, 2.0 * j / headDim);
        if (scaling is null) return freqs;

        double lowFreqWavelen = scaling.OriginalMaxPositions / scaling.LowFreqFactor;
        double highFreqWavelen = scaling.OriginalMaxPositions / scaling.HighFreqFactor;
        for (int j = 0; j < freqs.Length; j++)
        {
            double wavelen = 2 * Math.PI / freqs[j];
            if (wavelen < highFreqWavelen) continue;
            if (wavelen > lowFreqWavelen) { freqs[j] /= scaling.Factor; continue; }
            // Between the two bands the frequency moves smoothly from scaled to unscaled.
            double smooth = (scaling.OriginalMaxPositions / wavelen - scaling.LowFreqFactor)
                            / (scaling.HighFreqFactor - scaling.LowFreqFactor);
            freqs[j] = (1 - smooth) * freqs[j] / scaling.Factor + smooth * freqs[j];
        }
        return freqs;
    }

    /// <summary>
    /// The tables <see cref="Apply"/> reads, [seqLen, headDim] in fp32, computed in fp64 for accuracy at long positions:
    /// each pair's angle twice in cos, and in sin with the sign that the pair's first half takes, (−sin, +sin).
    /// </summary>
    public static (Tensor Cos, Tensor Sin) Tables(int seqLen, int headDim, double theta, RopeScaling? scaling)
    {
        var freqs = Frequencies(headDim, theta, scaling);
        int half = freqs.Length;
        var cos = new float[seqLen * 2 * half];
        var sin = new float[seqLen * 2 * half];
        for (int t = 0; t < seqLen; t++)
        for (int j = 0; j < half; j++)
        {
            double angle = t * freqs[j];
            int at = (t * half + j) * 2;
            cos[at] = cos[at + 1] = (float)Math.Cos(angle);
            sin[at + 1] = (float)Math.Sin(angle);
            sin[at] = -sin[at + 1];
        }
        return (tensor(cos, new long[] { seqLen, 2 * half }), tensor(sin, new long[] { seqLen, 2 * half }));
    }

    /// <summary>
    /// Rotates x [B, S, H, D] (any float dtype) by the tables' first S rows, in fp32: x·cos + swap(x)·sin, where swap
    /// exchanges the two halves of each pair. With the sign in the sin table that is the complex product
    /// (re·c − im·s, im·c + re·s) rounding for rounding, in three arithmetic kernels instead of six and a stack.
    /// </summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        long b = x.size(0), s = x.size(1), h = x.size(2), d = x.size(3);
        var x32 = x.to(ScalarType.Float32);
        var swapped = x32.reshape(b, s, h, d / 2, 2).flip(-1).view(b, s, h, d);
        var c = cos.narrow(0, 0, s).view(1, s, 1, d);
        var sn = sin.narrow(0, 0, s).view(1, s, 1, d);
        return (x32 * c + swapped * sn).to(x.dtype).MoveToOuterDisposeScope();
    }
}
