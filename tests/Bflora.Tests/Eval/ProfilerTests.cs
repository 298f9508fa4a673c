using System.Text.Json;
using Bflora.Config;
using Bflora.Data;
using Bflora.Eval;
using Bflora.Lora;
using Bflora.Models;
using Bflora.Models.Llama3;
using Bflora.Tests.Cli;
using Xunit;
using static TorchSharp.torch;
using Linear = TorchSharp.Modules.Linear;

namespace Bflora.Tests.Eval;

public sealed class ProfilerTests
{
    private static readonly BfloraConfig Config = BfloraConfig.Load(RepoPaths.Of("configs", "debug.toml"));

    private static Transformer DebugModel()
    {
        var spec = ModelBuilder.Resolve(Config);
        return ModelBuilder.Build(Config, spec.Args, spec.Folder);
    }

    private static EvalResult Evaluate(Transformer model, int windows)
    {
        var tokenizer = ModelBuilder.CreateTokenizer(Config, out _);
        using var reader = new WindowReader(new TextSource(RepoPaths.Of("data", "corpus")), tokenizer, Config.Training.SeqLen);
        return Evaluator.Run(model, reader, windows, Config.Training.LocalBatchSize, "clean");
    }

    [Fact]
    public void DebugModelProfilesTheConvertersFourteenLayersWithoutChangingTheModel()
    {
        using var model = DebugModel();
        var before = Evaluate(model, 4);
        IReadOnlyList<LayerMaxima> layers;
        float weightMax, activationMax;
        long activationCount, weightCount;
        using (var profiler = Profiler.Attach(model, Config.Bitflip.SkipPatterns))
        {
            var during = Evaluate(model, 4);
            Assert.Equal(before.Loss, during.Loss);
            layers = profiler.Layers;
            weightMax = profiler.Weights.Max;
            activationMax = profiler.Activations.Max;
            activationCount = profiler.Activations.Count;
            // 256 tokens, each feeding six Linears of width 64 and one (w2) of width 192, in each of 2 blocks.
            Assert.Equal(256L * (6 * 64 + 192) * 2, activationCount);
            weightCount = profiler.Weights.Count;
        }

        Assert.Equal(14, layers.Count);
        Assert.All(model.LinearSlots(), s => Assert.IsType<Linear>(s.Host.GetLinear(s.LocalName)));
        Assert.Equal(before.Loss, Evaluate(model, 4).Loss);

        var weights = model.LinearSlots().Select(s => ((Linear)s.Host.GetLinear(s.LocalName)).weight!).ToList();
        float trueMax = weights.Select(w => w.abs().max().@float().item<float>()).Max();
        Assert.Equal(trueMax, weightMax);
        Assert.Equal(weights.Sum(w => w.numel()), weightCount);
        Assert.Equal(trueMax, layers.Max(l => l.Weight));
        Assert.Equal(activationMax, layers.Max(l => l.Activation));

        var converted = BitFlipConverter.Convert(model, new ConversionOptions(
            Config.Bitflip.ToFlipSettings(), 0, 1, Config.Bitflip.SkipPatterns));
        Assert.Equal(converted.Layers.Select(l => l.Name), layers.Select(l => l.Name));
    }

    [Fact]
    public void InputsCountedAsOnADeviceGiveTheSameProfile()
    {
        using var model = DebugModel();
        (IReadOnlyList<LayerMaxima> Layers, MagnitudeHistogram Activations) Profile(bool onDevice)
        {
            Profiler.CountCpuInputsAsOnDevice = onDevice;
            try
            {
                using var profiler = Profiler.Attach(model, Config.Bitflip.SkipPatterns);
                Evaluate(model, 4);
                return (profiler.Layers, profiler.Activations);
            }
            finally
            {
                Profiler.CountCpuInputsAsOnDevice = false;
            }
        }

        var (loopLayers, loop) = Profile(onDevice: false);
        var (deviceLayers, device) = Profile(onDevice: true);
        Assert.Equal(loopLayers, deviceLayers);
        Assert.Equal(loop.Count, device.Count);
        for (int bin = 0; bin < MagnitudeHistogram.Bins; bin++)
            Assert.Equal(loop.CountOf((ushort)bin), device.CountOf((ushort)bin));
    }

    [Fact]
    public void SkipPatternsThatLeaveNothingAreOneClearError()
    {
        using var model = DebugModel();
        var error = Assert.Throws<BfloraInputException>(() => Profiler.Attach(model, ["layers", "output"]));
        Assert.Contains("skip_patterns", error.Message);
        Assert.All(model.LinearSlots(), s => Assert.IsType<Linear>(s.Host.GetLinear(s.LocalName)));
    }

    [Fact]
    public void CliProfileWritesTheFixedJsonKeysAndForcesTheCleanModel()
    {
        string json = Path.Combine(Path.GetTempPath(), $"bflora-profile-{Guid.NewGuid():N}.json");
        try
        {
            var r = CliRunner.Run(["eval", "--config", "configs/debug.toml", "--num-samples", "4", "--profile", "--bitflip",
                "--json", json]);
            Assert.Equal(0, r.ExitCode);
            Assert.Contains("warning: profile forces the clean model", r.Stderr);
            Assert.Contains("condition: no bitflip, no LoRA (clean baseline)", r.Stdout);
            Assert.Contains("x_zero_out_t: current=8192  [OK]  min-safe=", r.Stdout);
            Assert.Contains("w_zero_out_t: current=256  [OK]  min-safe=", r.Stdout);
            Assert.True(r.Stdout.IndexOf("perplexity:", StringComparison.Ordinal) < r.Stdout.IndexOf("PROFILE", StringComparison.Ordinal));

            using var doc = JsonDocument.Parse(File.ReadAllText(json));
            var root = doc.RootElement;
            Assert.Equal("profile", root.GetProperty("mode").GetString());
            Assert.Equal(14, root.GetProperty("layers").GetInt32());
            foreach (string part in new[] { "activations", "weights" })
            {
                var s = root.GetProperty(part);
                double[] values = new[] { "p50", "p99", "p99.9", "p99.99", "max" }.Select(k => s.GetProperty(k).GetDouble()).ToArray();
                Assert.Equal(values.Order(), values);
                Assert.True(values[0] > 0);
            }
            var suggested = root.GetProperty("suggested");
            Assert.EndsWith(".0", suggested.GetProperty("x_zero_out_t").GetRawText()); // a float, also to Python's json
            Assert.Equal(ProfileRun.SuggestedThreshold(root.GetProperty("activations").GetProperty("max").GetDouble()),
                suggested.GetProperty("x_zero_out_t").GetDouble());
            Assert.Equal(ProfileRun.SuggestedThreshold(root.GetProperty("weights").GetProperty("max").GetDouble()),
                suggested.GetProperty("w_zero_out_t").GetDouble());
        }
        finally
        {
            File.Delete(json);
        }
    }
}
