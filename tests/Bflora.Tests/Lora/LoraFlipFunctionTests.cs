using Bflora.Bitflip;
using Bflora.Lora;
using TorchSharp.Modules;
using Xunit;
using static TorchSharp.torch;

namespace Bflora.Tests.Lora;

/// <summary>The fused LoRA flip function against the layer's reference composition of autograd ops.</summary>
public class LoraFlipFunctionTests
{
    const long In = 96, Out = 40;
    const int R = 4;

    /// <summary>
    /// High probabilities (0.5^3) so that many bits flip. With hits, a threshold of 2 drops a few percent of the N(0,1)
    /// weights and inputs; without, only fraction bits flip (never to NaN/Inf) and a huge threshold drops nothing.
    /// </summary>
    static FlipSettings Settings(FlipRng rng, bool hits) => hits
        ? new(0.125, 0.125, 2.0, 0.125, 0.125, 2.0, 11, rng)
        : new(0, 0.125, 1e30, 0, 0.125, 1e30, 11, rng);

    static BitFlipLinearLora Layer(FlipSettings settings, long seed)
    {
        using var g = new Generator((ulong)seed);
        var w = new Parameter(randn(new[] { Out, In }, generator: g).to(ScalarType.BFloat16), requires_grad: false);
        var layer = new BitFlipLinearLora(w, null, R, alpha: 8, layerIdx: 3, settings, new FlipStep { Value = 5 }, g);
        using (no_grad()) layer.LoraB!.copy_(randn(new[] { Out, (long)R }, generator: g).mul(0.5));
        return layer;
    }

    static (Tensor Y, Tensor GradX, Tensor GradA, Tensor GradB) Run(BitFlipLinearLora layer, Tensor x, Tensor upstream,
        bool reference)
    {
        layer.LoraA!.grad = null;
        layer.LoraB!.grad = null;
        var input = x.detach().clone().requires_grad_(true);
        var y = reference ? layer.ForwardReference(input) : layer.call(input);
        y.to(ScalarType.Float32).mul(upstream).sum().backward();
        return (y.detach(), input.grad!.clone(), layer.LoraA.grad!.clone(), layer.LoraB.grad!.clone());
    }

    static void Close(Tensor expected, Tensor actual, string what)
    {
        var e = expected.to(ScalarType.Float32);
        var a = actual.to(ScalarType.Float32);
        double err = (a - e).norm().item<float>(), scale = e.norm().item<float>();
        Assert.True(scale > 0, $"{what}: the reference gradient is zero, the case tests nothing");
        Assert.True(err <= 1e-2 * scale, $"{what}: relative error {err / scale:G3} exceeds bf16 tolerance");
    }

    [Theory]
    [InlineData(FlipRng.Fast, true)]
    [InlineData(FlipRng.Fast, false)]
    [InlineData(FlipRng.Philox, true)]
    [InlineData(FlipRng.Philox, false)]
    public void The_fused_function_equals_the_reference_composition(FlipRng rng, bool hits)
    {
        using var scope = NewDisposeScope();
        var settings = Settings(rng, hits);
        var layer = Layer(settings, seed: 7);
        using var g = new Generator(9);
        var x = randn(new[] { 3L, 17, In }, generator: g).to(ScalarType.BFloat16);
        var upstream = randn(new[] { 3L, 17, Out }, generator: g);

        var fast = Run(layer, x, upstream, reference: false);
        var slow = Run(layer, x, upstream, reference: true);

        Assert.Equal(TensorBits.ReadWords(slow.Y), TensorBits.ReadWords(fast.Y));
        Close(slow.GradX, fast.GradX, "dx");
        Close(slow.GradA, fast.GradA, "dA");
        Close(slow.GradB, fast.GradB, "dB");

        // The hit cases must really exercise the corrections: some weight and some input elements dropped.
        var merged = LoraFlipFunction.Merge(layer.Weight, layer.LoraA!, layer.LoraB!, layer.Scaling);
        var wop = settings.WOp(5, 3);
        var wDropped = BitFlip.FlipIntoRecordingDropped(merged, empty_like(merged), wop);
        var xMask = BitFlip.StraightThroughGradient(x, ones_like(x), settings.XOp(5, 3));
        Assert.Equal(hits, wDropped is not null);
        Assert.Equal(hits, xMask.eq(0).any().item<bool>());
    }

    [Fact]
    public void Recorded_drops_are_exactly_where_the_straight_through_gradient_is_zero_and_the_flip_is_unchanged()
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(3);
        foreach (var dtype in new[] { ScalarType.BFloat16, ScalarType.Float16, ScalarType.Float32 })
        {
            // 70,001 elements: more than one parallel chunk, and a tail that is no whole vector.
            var w = randn(new[] { 70001L }, generator: g).to(dtype);
            w[0] = tensor(0.0f).to(dtype);   // a true zero that survives: not a drop
            foreach (var rng in new[] { FlipRng.Fast, FlipRng.Philox })
            {
                var op = new FlipOp(4, 4, 21, 22, 1.5, rng);
                var expected = BitFlip.StraightThroughGradient(w, ones_like(w), op).eq(0).nonzero().reshape(-1);
                var flipped = empty_like(w);
                var actual = BitFlip.FlipIntoRecordingDropped(w, flipped, op)!;
                Assert.Equal(expected.data<long>().ToArray(), actual.data<long>().ToArray());
                Assert.Equal(TensorBits.ReadWords(BitFlip.Flip(w, op)), TensorBits.ReadWords(flipped));

                var inPlace = w.clone();
                var again = BitFlip.FlipIntoRecordingDropped(inPlace, inPlace, op, maxThreads: 1)!;
                Assert.Equal(actual.data<long>().ToArray(), again.data<long>().ToArray());
                Assert.Equal(TensorBits.ReadWords(flipped), TensorBits.ReadWords(inPlace));
            }
        }
    }

    [Fact]
    public void The_index_list_correction_removes_exactly_the_dropped_positions_gradient()
    {
        using var scope = NewDisposeScope();
        using var gen = new Generator(4);
        Tensor Bf(params long[] shape) => randn(shape, generator: gen).to(ScalarType.BFloat16);
        var (g, x2, a, b, gradA, gradB) = (Bf(50, Out), Bf(50, In), Bf(R, In), Bf(Out, R), Bf(R, In), Bf(Out, R));
        var dropped = randperm(Out * In, generator: gen).narrow(0, 0, 300).sort().Values;
        const double s = 2.0;

        // By hand: the dropped positions' part of the full weight gradient, projected onto A and B.
        var (fixA, fixB) = FlipSelfTest.LoraCorrectionByHand(g, x2, a, b, dropped, s);
        var expectedA = gradA.to(ScalarType.Float32) + fixA;
        var expectedB = gradB.to(ScalarType.Float32) + fixB;

        var (newA, newB) = LoraFlipFunction.CorrectAt(gradA, gradB, g, x2, a, b, dropped, s);
        Close(expectedA, newA, "dA");
        Close(expectedB, newB, "dB");
    }

    [Fact]
    public void Full_training_keeps_the_composition_and_gives_the_weight_its_gradient()
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(5);
        var w = new Parameter(randn(new[] { Out, In }, generator: g).to(ScalarType.BFloat16), requires_grad: false);
        var layer = new BitFlipLinearLora(w, null, 0, 1, 0, Settings(FlipRng.Fast, hits: true), new FlipStep(), g);
        w.requires_grad = true;
        var x = randn(new[] { 5L, In }, generator: g).to(ScalarType.BFloat16);
        var y = layer.call(x);
        Assert.Equal(TensorBits.ReadWords(layer.ForwardReference(x)), TensorBits.ReadWords(y));
        y.to(ScalarType.Float32).sum().backward();
        Assert.NotNull(w.grad);
        Assert.True(w.grad!.to(ScalarType.Float32).abs().sum().item<float>() > 0);
    }

    [Fact]
    public void A_training_step_through_the_fused_layer_leaves_no_live_tensors()
    {
        var layer = Layer(Settings(FlipRng.Fast, hits: true), seed: 2);
        long before = TorchSharp.DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 3; i++)
        {
            using var scope = NewDisposeScope();
            var x = randn(new[] { 4L, In }).to(ScalarType.BFloat16).requires_grad_(true);
            layer.call(x).to(ScalarType.Float32).sum().backward();
            layer.LoraA!.grad = null;
            layer.LoraB!.grad = null;
        }
        Assert.Equal(before, TorchSharp.DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }
}
