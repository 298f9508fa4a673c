using Bflora.Models.Llama3;
using static TorchSharp.torch;

namespace Bflora.Tests.Models;

internal static class ModelTestKit
{
    public static readonly ModelArgs Tiny = new(Dim: 32, NLayers: 2, NHeads: 4, NKvHeads: 2, FfnHidden: 48, VocabSize: 50,
        MaxSeqLen: 256);

    /// <summary>A random fp32 model (fp32 keeps comparisons between equivalent models tight).</summary>
    public static Transformer Random(ModelArgs args, long seed = 1, ScalarType dtype = ScalarType.Float32)
    {
        var model = new Transformer(args, META, dtype);
        ModelInit.Materialize(model, (name, shape) => ModelInit.RandomParameter(args, name, shape, seed, dtype));
        model.eval();
        return model;
    }

    public static Tensor Tokens(long batch, long seq, int vocab, int seed = 7)
    {
        var g = new Generator((ulong)seed);
        return randint(0, vocab, new[] { batch, seq }, dtype: ScalarType.Int64, generator: g);
    }

    public static Tensor Logits(Transformer model, Tensor tokens)
    {
        using var _ = no_grad();
        return model.call(tokens);
    }
}
