using Bflora.Bitflip;
using Bflora.Training;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Bflora.Tests.Training;

public class TrainingSessionTests
{
    [Theory]
    [InlineData("lora", true, 1e-2)]
    [InlineData("lora", false, 1e-2)]
    [InlineData("full", true, 3e-3)]
    [InlineData("full", false, 3e-3)]
    public void Loss_decreases_over_20_steps(string trainable, bool flips, double lr)
    {
        using var session = TrainingSession.Open(TrainingKit.Config(trainable, flips, lr, steps: 20));
        var schedule = new LrSchedule(lr, 2, 20);
        var losses = Enumerable.Range(0, 20).Select(_ => session.Step(schedule).Loss).ToArray();
        double first = losses.Take(3).Average(), last = losses.TakeLast(3).Average();
        Assert.True(last < first - 0.2, $"{trainable} flips={flips}: first {first:F4} last {last:F4} ({string.Join(", ", losses.Select(l => l.ToString("F3")))})");
        Assert.Equal(20, session.Converted.Step.Value);
    }

    [Fact]
    public void A_lora_step_changes_only_lora_A_and_B_and_starts_at_the_base_loss()
    {
        using var lora = TrainingSession.Open(TrainingKit.Config("lora", steps: 3));
        var before = lora.Model.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().clone());
        var schedule = new LrSchedule(1e-2, 0, 3);
        double loss1 = lora.Step(schedule).Loss;
        lora.Step(schedule);
        foreach (var (name, p) in lora.Model.named_parameters())
        {
            bool isLora = name.EndsWith(".lora_A") || name.EndsWith(".lora_B");
            bool same = TrainingKit.Same(p.detach(), before[name]);
            Assert.True(isLora != same, $"{name}: lora={isLora} unchanged={same}");
        }
        Assert.Equal(28, lora.Trainable.Count); // 14 layers × (A, B); output is skipped

        // B = 0 merges to exactly W, so step 1 sees the base model (with the same flips): a full-mode session converts
        // with r = 0 and computes its step-1 loss before any update.
        using var full = TrainingSession.Open(TrainingKit.Config("full", steps: 3));
        Assert.Equal(loss1, full.Step(schedule).Loss);
        Assert.All(full.Model.parameters(), p => Assert.True(p.requires_grad));
    }

    [Fact]
    public void Steps_leave_no_live_tensors_behind()
    {
        using var session = TrainingSession.Open(TrainingKit.Config("lora", steps: 6));
        var schedule = new LrSchedule(1e-2, 0, 6);
        session.Step(schedule);
        session.Step(schedule);
        long live = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 3; i++) session.Step(schedule);
        Assert.Equal(live, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }

    [Fact]
    public void The_train_split_option_reads_the_same_windows_as_the_whole_stream_at_first()
    {
        // The held-out windows lie at the end of the stream, so the first steps of both see the same data.
        using var whole = TrainingSession.Open(TrainingKit.Config("lora", steps: 2));
        using var split = TrainingSession.Open(TrainingKit.Config("lora", steps: 2), trainSplitOnly: true);
        var schedule = new LrSchedule(1e-2, 0, 2);
        Assert.Equal(whole.Step(schedule).Loss, split.Step(schedule).Loss);
        Assert.Equal(whole.DataCursor, split.DataCursor);
    }

    [Theory]
    [InlineData("bfloat16", ScalarType.BFloat16)]
    [InlineData("float32", ScalarType.Float32)]
    public void Masters_are_rounded_into_the_parameters_which_share_one_buffer(string masterDtype, ScalarType expected)
    {
        using var session = TrainingSession.Open(TrainingKit.Config("lora", steps: 2, overrides: [$"training.master_dtype=\"{masterDtype}\""]));
        var schedule = new LrSchedule(1e-2, 0, 2);
        session.Step(schedule);
        session.Step(schedule);
        Assert.All(session.Slots, s => Assert.Equal(expected, s.Master.dtype));
        foreach (var ((name, p), slot) in session.Trainable.Zip(session.Slots))
            Assert.True(TrainingKit.Same(p.detach(), slot.Master.to(p.dtype)), name);
        // One storage, laid out as the masters: each parameter starts where the previous one ends.
        var (first, second) = (session.Trainable[0].Param, session.Trainable[1].Param);
        Assert.Equal(TensorBits.Address(first) + (ulong)(first.numel() * first.element_size()), TensorBits.Address(second));
        Assert.False(session.Converted.Layers.All(l => l.Layer.LoraB!.count_nonzero().item<long>() == 0));
    }

    [Fact]
    public void Accumulation_divides_the_loss_so_gradients_are_global_batch_means()
    {
        // Two micro-batches of 1 window see the same windows as one batch of 2; loss and gradient norm agree up to bf16.
        using var one = TrainingSession.Open(TrainingKit.Config("lora", steps: 1, batch: 2));
        using var two = TrainingSession.Open(TrainingKit.Config("lora", steps: 1, batch: 1,
            overrides: ["training.gradient_accumulation_steps=2"]));
        var schedule = new LrSchedule(1e-2, 0, 1);
        var a = one.Step(schedule);
        var b = two.Step(schedule);
        Assert.Equal(a.Loss, b.Loss, 0.03);
        Assert.Equal(a.GradNorm, b.GradNorm, a.GradNorm * 0.03);
        Assert.Equal(a.Tokens, b.Tokens);
    }

    [Fact]
    public void Bad_training_settings_are_input_errors()
    {
        var rankZero = Assert.Throws<BfloraInputException>(() => TrainingSession.Open(TrainingKit.Config(overrides: ["lora.r=0"])));
        Assert.Contains("lora.r", rankZero.Message);
        var world = Assert.Throws<BfloraInputException>(() => TrainingSession.Open(TrainingKit.Config(overrides: ["parallelism.fsdp_degree=2"])));
        Assert.Contains("fsdp_degree", world.Message);
    }
}
