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

    /// <summary>cos and sin tables [seqLen, headDim/2] in fp32, computed in fp64 for accuracy at long positions.</summary>
    public static (Tensor Cos, Tensor Sin) Tables(int seqLen, int headDim, double theta, RopeScaling? scaling)
    {
        var freqs = Frequencies(headDim, theta, scaling);
        int half = freqs.Length;
        var cos = new float[seqLen * half];
        var sin = new float[seqLen * half];
        for (int t = 0; t < seqLen; t++)
        for (int j = 0; j < half; j++)
        {
            double angle = t * freqs[j];
            cos[t * half + j] = (float)Math.Cos(angle);
            sin[t * half + j] = (float)Math.Sin(angle);
        }
        return (tensor(cos, new long[] { seqLen, half }), tensor(sin, new long[] { seqLen, half }));
    }

    /// <summary>Rotates x [B, S, H, D] (any float dtype) by the tables' first S rows; arithmetic in fp32.</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], s = x.shape[1], h = x.shape[2], d = x.shape[3];
        var pairs = x.to(ScalarType.Float32).reshape(b, s, h, d / 2, 2);
        var re = pairs.select(-1, 0);
        var im = pairs.select(-1, 1);
        var c = cos.narrow(0, 0, s).to(x.device).view(1, s, 1, d / 2);
        var sn = sin.narrow(0, 0, s).to(x.device).view(1, s, 1, d / 2);
        var outRe = re * c - im * sn;
        var outIm = re * sn + im * c;
        return stack(new[] { outRe, outIm }, -1).reshape(b, s, h, d).to(x.dtype).MoveToOuterDisposeScope();
    }
}
