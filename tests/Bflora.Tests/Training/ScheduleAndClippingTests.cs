using Bflora.Training;
using Xunit;
using static TorchSharp.torch;

namespace Bflora.Tests.Training;

public class ScheduleAndClippingTests
{
    [Fact]
    public void Lr_follows_the_lambda_schedule_with_its_off_by_one()
    {
        var s = new LrSchedule(2e-4, WarmupSteps: 10, TotalSteps: 50);
        Assert.Equal(0.0, s.LrAt(1));                       // f(0) = 0
        Assert.Equal(2e-4 * 1 / 10, s.LrAt(2), 15);         // f(1)
        Assert.Equal(2e-4 * 9 / 10, s.LrAt(10), 15);        // step warmup uses f(warmup - 1)
        Assert.Equal(2e-4, s.LrAt(11), 15);                 // first full-rate step
        double last = 2e-4 * 0.5 * (1 + Math.Cos(Math.PI * 39 / 40));
        Assert.Equal(last, s.LrAt(50), 15);                 // f(N - 1) > 0
        Assert.True(s.LrAt(50) > 0);
    }

    [Fact]
    public void Cosine_denominator_is_at_least_one()
    {
        var s = new LrSchedule(1.0, WarmupSteps: 5, TotalSteps: 5);
        Assert.Equal(1.0, s.LrAt(6), 15);
        Assert.Equal(0.0, s.LrAt(7), 12);                   // cos(π): progress 1 over max(1, 0)
    }

    [Fact]
    public void Clipping_scales_the_global_norm_to_max_norm()
    {
        using var a = tensor(new float[] { 3, 0 });
        using var b = tensor(new float[] { 0, 4, 0 });      // global norm 5
        double before = GradientClipping.ClipInPlace([a, b], maxNorm: 1.0);
        Assert.Equal(5.0, before, 6);
        Assert.Equal(1.0 / (1.0 + 1e-6 / 5), GradientClipping.GlobalNorm([a, b]), 6);
        Assert.Equal(3.0f / (5 + 1e-6f), a[0].item<float>(), 6);
    }

    [Fact]
    public void A_small_norm_is_left_alone()
    {
        using var a = tensor(new float[] { 0.3f, 0.4f });
        double before = GradientClipping.ClipInPlace([a], maxNorm: 1.0);
        Assert.Equal(0.5, before, 6);
        Assert.Equal(new[] { 0.3f, 0.4f }, a.data<float>().ToArray());
    }

    [Fact]
    public void Bf16_gradients_are_summed_in_fp32()
    {
        using var g = full(new long[] { 4096 }, 1.0f, ScalarType.BFloat16);
        Assert.Equal(64.0, GradientClipping.GlobalNorm([g]), 6);
    }
}
