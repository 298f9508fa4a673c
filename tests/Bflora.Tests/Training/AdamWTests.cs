using Bflora.Training;
using AdamW = Bflora.Training.AdamW;
using Parameter = TorchSharp.Modules.Parameter;
using Xunit;
using static TorchSharp.torch;

namespace Bflora.Tests.Training;

public class AdamWTests
{
    [Fact]
    public void One_step_equals_the_hand_computation()
    {
        using var p = tensor(new float[] { 1.0f, -2.0f });
        using var g = tensor(new float[] { 0.5f, 0.25f });
        using var slot = AdamWSlot.From("p", p, ScalarType.Float32);
        var opt = new AdamW(weightDecay: 0.1);
        opt.Step([slot], [g], lr: 0.01);
        // Step 1: m̂ = g, v̂ = g², so the update is lr·g/(|g| + eps) after decay p·(1 − lr·wd).
        double[] expected = [1.0 * (1 - 0.001) - 0.01 * 0.5 / (0.5 + 1e-8), -2.0 * (1 - 0.001) - 0.01 * 0.25 / (0.25 + 1e-8)];
        var got = slot.Master.data<float>().ToArray();
        Assert.Equal(expected[0], got[0], 6);
        Assert.Equal(expected[1], got[1], 6);
        Assert.Equal(1, opt.StepCount);
    }

    [Fact]
    public void Matches_torch_AdamW_over_several_steps()
    {
        using var init = randn(new long[] { 5, 3 }, generator: new Generator(3));
        using var reference = new Parameter(init.clone(), requires_grad: true);
        var torchOpt = optim.AdamW([reference], lr: 0.05, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01);
        using var slot = AdamWSlot.From("w", init, ScalarType.Float32);
        var ours = new AdamW(weightDecay: 0.01);
        var gen = new Generator(11);
        for (int step = 0; step < 5; step++)
        {
            using var grad = randn(new long[] { 5, 3 }, generator: gen);
            reference.grad = grad.clone();
            torchOpt.step();
            ours.Step([slot], [grad], lr: 0.05);
        }
        Assert.True(slot.Master.allclose(reference.detach(), rtol: 0, atol: 1e-6),
            $"max diff {(slot.Master - reference.detach()).abs().max().item<float>()}");
    }

    [Fact]
    public void Flat_slots_step_bit_for_bit_as_slot_by_slot_and_their_views_are_the_parameters()
    {
        using var scope = NewDisposeScope();
        var gen = new Generator(5);
        var shapes = new[] { new long[] { 4, 3 }, new long[] { 7 }, new long[] { 2, 5, 2 } };
        var initial = shapes.Select(s => randn(s, generator: gen).to(ScalarType.BFloat16)).ToList();
        var names = new[] { "a", "b", "c" };
        var flat = new FlatAdamWSlots(names.Zip(initial, (n, t) => (n, t)).ToList(), ScalarType.Float32, CPU);
        var single = names.Zip(initial, (n, t) => AdamWSlot.From(n, t, ScalarType.Float32)).ToList();
        var (flatOpt, singleOpt) = (new AdamW(0.01), new AdamW(0.01));
        for (int step = 0; step < 3; step++)
        {
            // The second parameter has no gradient in the first step: zeros, as slot by slot.
            var grads = shapes.Select((s, i) => step == 0 && i == 1 ? null : randn(s, generator: gen).to(ScalarType.BFloat16)).ToList();
            flatOpt.Step([flat.Whole], [flat.Flatten(grads)], lr: 0.1);
            singleOpt.Step(single, grads.Select((g, i) => g ?? zeros(shapes[i])).ToList(), lr: 0.1);
        }
        Assert.Equal(names, flat.Views.Select(v => v.Name));
        for (int i = 0; i < names.Length; i++)
        {
            Assert.Equal(shapes[i], flat.Views[i].Master.shape);
            Assert.Equal(single[i].Master.data<float>().ToArray(), flat.Views[i].Master.data<float>().ToArray());
            Assert.Equal(single[i].ExpAvgSq.data<float>().ToArray(), flat.Views[i].ExpAvgSq.data<float>().ToArray());
        }
        // A view written (a checkpoint restored) is the flat buffer written.
        flat.Views[2].ExpAvg.fill_(3.0f);
        Assert.Equal(3.0f, flat.Whole.ExpAvg[-1].item<float>());
        Assert.Throws<ArgumentException>(() => flat.Flatten([null]));
    }
}
