using Bflora.Config;
using Bflora.Data;

namespace Bflora.Eval;

/// <summary>Which windows an evaluation reads.</summary>
public enum EvalSplit
{
    /// <summary>The first windows of the data, as the original eval does (they overlap the training data).</summary>
    Head,

    /// <summary>The held-out last 10 % of the windows (see <see cref="WindowSplit"/>), which training with
    /// TrainSplitOnly never sees.</summary>
    HeldOut,
}

public static class EvalWindows
{
    public static WindowReader Open(BfloraConfig config, ITokenizer tokenizer, EvalSplit split)
    {
        var source = DataSources.Open(config);
        int seqLen = config.Training.SeqLen;
        return split == EvalSplit.HeldOut
            ? WindowSplit.Compute(source, tokenizer, seqLen).OpenHeldOut(source, tokenizer, seqLen)
            : new WindowReader(source, tokenizer, seqLen);
    }
}
