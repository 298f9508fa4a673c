using Bflora.Bitflip;
using Bflora.Lora;
using TorchSharp;
using TorchSharp.Modules;
using Xunit;
using static TorchSharp.torch;

namespace Bflora.Tests.Bitflip;

public class BitFlipLinearLoraTests
{
    static readonly FlipSettings Noisy = new(0.125, 0.0625, 8.0, 0.25, 0.125, 16.0, 40, FlipRng.Fast);

    static BitFlipLinearLora Layer(FlipSettings settings, FlipStep step, int r = 4, int layerIdx = 3)
    {
        var gen = new Generator(7);
        var w = torch.randn(new long[] { 24, 32 }, generator: gen).to(ScalarType.BFloat16);
        return new BitFlipLinearLora(new Parameter(w, requires_grad: false), null, r, 8, layerIdx, settings, step,
            new Generator(11));
    }

    static Tensor Input() => torch.randn(new long[] { 2, 5, 32 }, generator: new Generator(3)).to(ScalarType.BFloat16);

    static void Equal(Tensor expected, Tensor actual) =>
        Assert.Equal(TensorBits.ReadWords(expected), TensorBits.ReadWords(actual));

    [Fact]
    public void Parameters_are_named_like_peft_and_initialised()
    {
        using var scope = torch.NewDisposeScope();
        var layer = Layer(FlipSettings.Off, new FlipStep());
        var names = layer.named_parameters().Select(p => p.name).ToArray();
        Assert.Equal(new[] { "weight", "lora_A", "lora_B" }, names);
        Assert.Equal(new long[] { 4, 32 }, layer.LoraA!.shape);
        Assert.Equal(new long[] { 24, 4 }, layer.LoraB!.shape);
        Assert.Equal(0.0, layer.LoraB.@float().abs().sum().item<float>());
        Assert.True(layer.LoraA.@float().abs().max().item<float>() <= 1 / Math.Sqrt(32));
        Assert.True(layer.LoraA.@float().std().item<float>() > 0.05);
        Assert.False(layer.Weight.requires_grad);
        Assert.Equal(2.0, layer.Scaling);
        Equal(layer.LoraA, Layer(FlipSettings.Off, new FlipStep()).LoraA!);
        Assert.Equal(new[] { "weight" }, Layer(FlipSettings.Off, new FlipStep(), r: 0).named_parameters().Select(p => p.name));
    }

    [Fact]
    public void Flips_off_and_b_zero_equal_plain_linear()
    {
        using var scope = torch.NewDisposeScope();
        var layer = Layer(FlipSettings.Off, new FlipStep());
        var x = Input();
        Equal(torch.nn.functional.linear(x, layer.Weight), layer.forward(x));
    }

    [Theory]
    [InlineData(4, FlipRng.Fast)]
    [InlineData(4, FlipRng.Philox)]
    [InlineData(0, FlipRng.Fast)]
    public void Flips_on_equal_the_reference_composition(int r, FlipRng rng)
    {
        using var scope = torch.NewDisposeScope();
        var settings = Noisy with { Rng = rng };
        var step = new FlipStep { Value = 5 };
        var layer = Layer(settings, step, r);
        if (r > 0)
            using (torch.no_grad()) layer.LoraB!.copy_(torch.randn(new long[] { 24, r }, generator: new Generator(5)));
        var x = Input();
        var merged = r > 0 ? layer.Weight.add(layer.LoraB!.matmul(layer.LoraA!).mul(layer.Scaling)) : layer.Weight;
        var expected = torch.nn.functional.linear(
            ReferenceFlip.Flip(x, settings.XOp(5, 3)), ReferenceFlip.Flip(merged, settings.WOp(5, 3)));
        Equal(expected, layer.forward(x));
        using (torch.no_grad()) Equal(expected, layer.forward(x));   // the buffer-saving path without autograd
        Equal(expected, layer.forward(x.requires_grad_(true)));       // the fused autograd function (r > 0)
    }

    [Fact]
    public void Seeds_follow_the_formula()
    {
        var step = new FlipStep { Value = 3 };
        var layer = Layer(Noisy with { BaseSeed = 5 }, step, layerIdx: 7);
        int b = (int)((5 + 3 * 1000003L + 4 * 7) & 0x7FFFFFFC);
        Assert.Equal(new LayerSeeds(b, b + 1, b + 2, b + 3), layer.CurrentSeeds);
        step.Value = 3000;
        int wrapped = (int)((5 + 3000 * 1000003L + 28) & 0x7FFFFFFC);
        Assert.True(wrapped >= 0);
        Assert.Equal(wrapped, layer.CurrentSeeds.XExp);
        var op = (Noisy with { BaseSeed = 5 }).WOp(3000, 7);
        Assert.Equal((wrapped + 2, wrapped + 3), (op.SeedExp, op.SeedFrac));
        Assert.Equal((3, 4), (op.ExpHalves, op.FracHalves));
    }

    [Fact]
    public void Same_step_repeats_and_next_step_differs()
    {
        using var scope = torch.NewDisposeScope();
        var step = new FlipStep();
        var layer = Layer(Noisy, step);
        var x = Input();
        var first = layer.forward(x);
        Equal(first, layer.forward(x));
        step.Value++;
        Assert.NotEqual(TensorBits.ReadWords(first), TensorBits.ReadWords(layer.forward(x)));
    }

    [Fact]
    public void Evaluation_under_no_grad_sees_the_same_flips_and_leaves_the_step()
    {
        using var scope = torch.NewDisposeScope();
        var step = new FlipStep { Value = 9 };
        var layer = Layer(Noisy with { Rng = FlipRng.Philox }, step);
        var x = Input();
        var training = layer.forward(x.requires_grad_(true));
        using (torch.no_grad()) Equal(training, layer.forward(x));
        Assert.Equal(9, step.Value);
    }

    [Fact]
    public void Bad_probability_fails_at_construction()
    {
        Assert.Throws<ArgumentException>(() => Layer(Noisy with { WPFrac = 1.5 }, new FlipStep()));
    }

    [Fact]
    public void Gradient_reaches_lora_through_the_weight_flip()
    {
        using var scope = torch.NewDisposeScope();
        var layer = Layer(Noisy, new FlipStep());
        var x = Input().requires_grad_(true);
        layer.forward(x).@float().pow(2).sum().backward();
        Assert.NotNull(layer.LoraB!.grad);
        Assert.True(layer.LoraB.grad!.@float().abs().sum().item<float>() > 0);
        Assert.NotNull(x.grad);
        Assert.Null(layer.Weight.grad);
    }
}
