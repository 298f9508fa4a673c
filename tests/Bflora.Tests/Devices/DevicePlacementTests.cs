using Bflora.Bitflip;
using Bflora.Config;
using Bflora.Data;
using Bflora.Devices;
using Bflora.Models;
using Bflora.Models.Llama3;
using Bflora.Tests.Models;
using Bflora.Tests.Training;
using Bflora.Training;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Bflora.Tests.Devices;

/// <summary>
/// The device flows from the config to every tensor a run keeps. Without a GPU, the meta device stands in for "a device
/// other than the CPU": it shows that each value is moved where it was asked to go, which is all the plumbing does.
/// </summary>
public class DevicePlacementTests
{
    [Fact]
    public void A_built_model_has_every_parameter_on_the_asked_device_and_its_tied_head_is_the_embedding()
    {
        var config = BfloraConfig.FromText("[model]\nflavor = \"debug\"\ninit = \"random\"\ntokenizer = \"byte\"\n");
        var args = Flavors.Get("1B") with { Dim = 64, NLayers = 2, NHeads = 4, NKvHeads = 2, FfnHidden = 96, VocabSize = 300 };
        using var model = ModelBuilder.Build(config, args, null, device: META);
        Assert.All(model.named_parameters(), p => Assert.True(p.parameter.is_meta, p.name));
        Assert.True(ComputeDevice.Same(META, model.Device));
        var head = Assert.IsType<TorchSharp.Modules.Linear>(model.Output);
        Assert.Equal(model.named_parameters().First(p => p.name == "tok_embeddings.weight").parameter.Handle, head.weight!.Handle);
        var error = Assert.Throws<InvalidOperationException>(() => ComputeDevice.EnsureParametersOn(model, CPU));
        Assert.Contains("'tok_embeddings.weight' is on meta", error.Message);
    }

    [Fact]
    public unsafe void A_model_materialised_on_the_cpu_keeps_the_tensors_it_was_given()
    {
        using var model = new Transformer(ModelTestKit.Tiny, META, ScalarType.BFloat16);
        var given = new Dictionary<string, nint>();
        ModelInit.Materialize(model, (name, shape) =>
        {
            var value = randn(shape).to(ScalarType.BFloat16);
            given[name] = (nint)TensorBits.Pointer(value);
            return value;
        }, CPU);
        // The very same memory: no copy on the CPU path.
        foreach (var (name, p) in model.named_parameters())
            Assert.True(given[name] == (nint)TensorBits.Pointer(p), name);
    }

    [Fact]
    public void Lora_adapters_are_made_on_their_weight_device_with_the_cpu_values()
    {
        using var scope = NewDisposeScope();
        var w = randn(24, 32).to(ScalarType.BFloat16);
        Bflora.Lora.BitFlipLinearLora Layer(Tensor weight) => new(new TorchSharp.Modules.Parameter(weight, requires_grad: false),
            null, 4, 8, 0, FlipSettings.Off, new FlipStep(), new Generator(11));
        var onMeta = Layer(w.to(META));
        Assert.True(onMeta.LoraA!.is_meta && onMeta.LoraB!.is_meta);
        var onCpu = Layer(w);
        Assert.Equal(DeviceType.CPU, onCpu.LoraA!.device_type);
        Assert.Equal(new long[] { 4, 32 }, onMeta.LoraA.shape);
        Assert.Equal(new long[] { 24, 4 }, onMeta.LoraB.shape);
    }

    [Fact]
    public void Batches_are_made_on_the_asked_device()
    {
        int[][] windows = [[1, 2, 3, 4], [5, 6, 7, 8]];
        var (inputs, labels) = Batches.ToTensors(windows, META);
        Assert.True(inputs.is_meta && labels.is_meta);
        Assert.Equal(new long[] { 2, 3 }, inputs.shape);
        var (cpuInputs, cpuLabels) = Batches.ToTensors(windows);
        Assert.Equal(DeviceType.CPU, cpuInputs.device_type);
        Assert.Equal(new long[] { 2, 3, 4, 6, 7, 8 }, cpuLabels.data<long>().ToArray());
    }

    [Fact]
    public void Rope_tables_are_made_once_per_device_not_on_every_forward()
    {
        using var model = ModelTestKit.Random(ModelTestKit.Tiny);
        var first = model.RopeFor(16, CPU).Cos;
        // A device object equal in value but not in reference (every tensor.device is a new one).
        Assert.Same(first, model.RopeFor(8, new Device(DeviceType.CPU)).Cos);
        Assert.NotSame(first, model.RopeFor(8, META).Cos);
    }

    [Fact]
    public void A_cpu_session_keeps_model_masters_and_moments_on_the_cpu()
    {
        using var session = TrainingSession.Open(TrainingKit.Config(steps: 1));
        Assert.True(ComputeDevice.Same(CPU, session.Device));
        Assert.All(session.Slots, s => Assert.True(
            new[] { s.Master, s.ExpAvg, s.ExpAvgSq }.All(t => t.device_type == DeviceType.CPU), s.Name));
        ComputeDevice.EnsureParametersOn(session.Model, CPU);
    }

    [Fact]
    public void Cuda_with_more_than_one_rank_is_refused_before_anything_is_built()
    {
        var error = Assert.Throws<BfloraInputException>(() =>
            TrainingSession.Open(TrainingKit.Config(overrides: ["training.device=cuda", "parallelism.fsdp_degree=2"])));
        Assert.Contains("NCCL", error.Message);
        ComputeDevice.EnsureSingleGpu(TrainingKit.Config(overrides: ["parallelism.fsdp_degree=2"]));
        Assert.True(ComputeDevice.Same(CPU, ComputeDevice.Resolve("cpu")));
    }
}
