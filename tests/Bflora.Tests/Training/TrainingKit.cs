using Bflora.Config;
using static TorchSharp.torch;

namespace Bflora.Tests.Training;

/// <summary>Small debug-flavor training configs on the bundled corpus.</summary>
internal static class TrainingKit
{
    public static BfloraConfig Config(string trainable = "lora", bool flips = true, double lr = 1e-2, int steps = 20,
        int warmup = 2, int seqLen = 32, int batch = 2, params string[] overrides)
    {
        string p = flips ? "1.52587890625e-05" : "0.0";
        string toml = $"""
            [model]
            flavor = "debug"
            init = "random"
            tokenizer = "byte"
            [data]
            path = "{RepoPaths.Of("data", "corpus")}"
            [training]
            seq_len = {seqLen}
            local_batch_size = {batch}
            steps = {steps}
            lr = {lr:R}
            warmup_steps = {warmup}
            max_norm = 1.0
            log_freq = 1
            save_freq = 1000
            trainable = "{trainable}"
            [lora]
            r = 4
            lora_alpha = 8
            [bitflip]
            w_p_exp = {p}
            w_p_frac = {p}
            x_p_exp = {p}
            x_p_frac = {p}
            w_zero_out_t = 256.0
            x_zero_out_t = 8192.0
            """;
        return BfloraConfig.FromText(toml, "trainkit", overrides);
    }

    /// <summary>Same shape and bit-identical values.</summary>
    public static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();
}
