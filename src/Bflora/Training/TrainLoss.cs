using TorchSharp;
using static TorchSharp.torch;

namespace Bflora.Training;

/// <summary>The training objective on the output head's logits.</summary>
public static class TrainLoss
{
    /// <summary>
    /// Mean cross-entropy of bf16 logits over every token, as the seed trains: log-softmax in the logits' dtype (same
    /// memory and gradient as its bf16 cross-entropy), but the mean over tokens taken in fp32. A bf16 scalar near 6 is
    /// only good to 0.03, so the loss that is logged and averaged over ranks would otherwise be quantised that coarsely.
    /// </summary>
    public static Tensor CrossEntropy(Tensor logits, Tensor labels)
    {
        using var scope = NewDisposeScope();
        var logProbs = nn.functional.log_softmax(logits.view(-1, logits.shape[^1]), 1);
        return logProbs.gather(1, labels.view(-1, 1)).to(ScalarType.Float32).mean().neg().MoveToOuterDisposeScope();
    }
}
