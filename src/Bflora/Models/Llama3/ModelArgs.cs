namespace Bflora.Models.Llama3;

/// <summary>Llama-3.1 RoPE frequency scaling (HF <c>rope_scaling</c> with <c>rope_type = "llama3"</c>).</summary>
public sealed record RopeScaling(double Factor, double LowFreqFactor, double HighFreqFactor, int OriginalMaxPositions)
{
    /// <summary>The values every Llama-3.1/3.3 70B/8B checkpoint uses; the original training code always applies them.</summary>
    public static readonly RopeScaling Llama31 = new(8.0, 1.0, 4.0, 8192);
}

/// <summary>Dimensions of a Llama-3-architecture decoder. <see cref="FfnHidden"/> is HF's intermediate_size.</summary>
public sealed record ModelArgs(
    int Dim,
    int NLayers,
    int NHeads,
    int NKvHeads,
    int FfnHidden,
    int VocabSize,
    double RopeTheta = 500000.0,
    double NormEps = 1e-5,
    RopeScaling? RopeScaling = null,
    bool TieEmbeddings = false,
    int MaxSeqLen = 131072)
{
    public int HeadDim => Dim / NHeads;

    /// <summary>Parameters that are not embeddings or the output head (the N of 6·N·tokens FLOP estimates).</summary>
    public long NonEmbeddingParams =>
        (long)NLayers * (2L * Dim * Dim + 2L * Dim * NKvHeads * HeadDim + 3L * Dim * FfnHidden + 2L * Dim) + Dim;

    public long TotalParams =>
        NonEmbeddingParams + (long)VocabSize * Dim * (TieEmbeddings ? 1 : 2);

    /// <summary>Throws <see cref="ArgumentException"/> for dimensions that cannot form a model.</summary>
    public void Validate()
    {
        if (Dim <= 0 || NLayers <= 0 || NHeads <= 0 || NKvHeads <= 0 || FfnHidden <= 0 || VocabSize <= 0)
            throw new ArgumentException($"model dimensions must be positive: {this}");
        if (Dim % NHeads != 0) throw new ArgumentException($"dim {Dim} is not divisible by n_heads {NHeads}");
        if (NHeads % NKvHeads != 0) throw new ArgumentException($"n_heads {NHeads} is not divisible by n_kv_heads {NKvHeads}");
        if (HeadDim % 2 != 0) throw new ArgumentException($"head dim {HeadDim} must be even for RoPE");
    }
}

/// <summary>The named model sizes. Vocabulary 0 means "the tokenizer's size".</summary>
public static class Flavors
{
    public const int Llama3Vocab = 128256;

    public static readonly IReadOnlyDictionary<string, ModelArgs> All = new Dictionary<string, ModelArgs>(StringComparer.OrdinalIgnoreCase)
    {
        ["debug"] = new(Dim: 64, NLayers: 2, NHeads: 4, NKvHeads: 2, FfnHidden: 192, VocabSize: 0),
        ["demo"] = new(Dim: 256, NLayers: 4, NHeads: 4, NKvHeads: 2, FfnHidden: 768, VocabSize: 0, MaxSeqLen: 4096),
        ["1B"] = new(Dim: 2048, NLayers: 16, NHeads: 32, NKvHeads: 8, FfnHidden: 8192, VocabSize: Llama3Vocab,
            RopeScaling: new RopeScaling(32.0, 1.0, 4.0, 8192), TieEmbeddings: true),
        ["8B"] = new(Dim: 4096, NLayers: 32, NHeads: 32, NKvHeads: 8, FfnHidden: 14336, VocabSize: Llama3Vocab),
        ["70B"] = new(Dim: 8192, NLayers: 80, NHeads: 64, NKvHeads: 8, FfnHidden: 28672, VocabSize: Llama3Vocab),
    };

    public static ModelArgs Get(string name) =>
        All.TryGetValue(name, out var args)
            ? args
            : throw new ArgumentException($"unknown flavor '{name}' (known: {string.Join(", ", All.Keys)})");
}
