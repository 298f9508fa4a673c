using Bflora.Training;
using Xunit;
using static TorchSharp.torch;

namespace Bflora.Tests.Training;

public class TrainLossTests
{
    [Fact]
    public void The_loss_is_the_bf16_cross_entropy_with_an_fp32_mean_and_the_same_gradient()
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(11);
        var logits = randn(new long[] { 3, 50, 300 }, generator: g).mul(3).to(ScalarType.BFloat16);
        var labels = randint(0, 300, new long[] { 3, 50 }, generator: g);

        var ours = logits.detach().requires_grad_(true);
        var loss = TrainLoss.CrossEntropy(ours, labels);
        Assert.Equal(ScalarType.Float32, loss.dtype);
        var exact = nn.functional.cross_entropy(logits.to(ScalarType.Float64).view(-1, 300), labels.view(-1)).item<double>();
        // Per-token bf16 log-probabilities averaged in fp32: far closer than the bf16 scalar's ulp (2^-6 near 4).
        Assert.True(Math.Abs(loss.item<float>() - exact) <= 2e-3 * exact, $"{loss.item<float>()} vs {exact}");

        loss.backward();
        var theirs = logits.detach().requires_grad_(true);
        nn.functional.cross_entropy(theirs.view(-1, 300), labels.view(-1)).backward();
        var a = ours.grad!.to(ScalarType.Float32);
        var b = theirs.grad!.to(ScalarType.Float32);
        Assert.True((a - b).norm().item<float>() <= 1e-2 * b.norm().item<float>(), "gradient of the seed's bf16 cross-entropy");
    }
}
