using Bflora.Bitflip;
using Bflora.Lora;
using Bflora.Models.Llama3;
using Bflora.Tests.Models;
using Xunit;
using static TorchSharp.torch;

namespace Bflora.Tests.Lora;

public class BitFlipConverterTests
{
    private static readonly FlipSettings SeedFlips = new(Math.Pow(0.5, 16), Math.Pow(0.5, 16), 256, Math.Pow(0.5, 16),
        Math.Pow(0.5, 16), 8192, 0);

    private static Transformer Debug() => ModelTestKit.Random(Flavors.Get("debug") with { VocabSize = 258 }, seed: 4,
        dtype: ScalarType.BFloat16);

    [Fact]
    public void The_debug_model_gets_seven_layers_per_block_in_registration_order_and_output_is_skipped()
    {
        using var model = Debug();
        var converted = BitFlipConverter.Convert(model, new ConversionOptions(SeedFlips, 4, 4, new[] { "output" }));
        Assert.Equal(7 * model.Args.NLayers, converted.Layers.Count);
        string[] order = { "attention.wq", "attention.wk", "attention.wv", "attention.wo", "feed_forward.w1", "feed_forward.w2", "feed_forward.w3" };
        for (int i = 0; i < converted.Layers.Count; i++)
        {
            Assert.Equal($"layers.{i / 7}.{order[i % 7]}", converted.Layers[i].Name);
            Assert.Equal(i, converted.Layers[i].Layer.LayerIdx);
        }
        Assert.IsType<TorchSharp.Modules.Linear>(model.Output);
        Assert.Contains(model.named_parameters(), p => p.name == "layers.1.feed_forward.w3.lora_B");
        Assert.Contains(model.named_parameters(), p => p.name == "layers.0.attention.wq.weight");
    }

    [Fact]
    public void A_custom_skip_pattern_leaves_those_layers_plain_and_renumbers_the_rest()
    {
        using var model = Debug();
        var converted = BitFlipConverter.Convert(model, new ConversionOptions(SeedFlips, 0, 1, new[] { "output", "wo", "w2" }));
        Assert.Equal(5 * model.Args.NLayers, converted.Layers.Count);
        Assert.DoesNotContain(converted.Layers, l => l.Name.EndsWith("wo") || l.Name.EndsWith("w2"));
        Assert.Equal("layers.0.feed_forward.w1", converted.Layers[3].Name);
        Assert.Equal(3, converted.Layers[3].Layer.LayerIdx);
        Assert.Equal("layers.1.attention.wq", converted.Layers[5].Name);
        var all = BitFlipConverter.Convert(Debug(), new ConversionOptions(SeedFlips, 0, 1, Array.Empty<string>()));
        Assert.Equal("output", all.Layers[^1].Name);
    }

    [Fact]
    public void With_b_zero_and_flips_off_the_converted_model_equals_the_base_model_exactly()
    {
        using var scope = NewDisposeScope();
        using var model = Debug();
        var tokens = ModelTestKit.Tokens(2, 16, 258);
        var before = ModelTestKit.Logits(model, tokens);
        BitFlipConverter.Convert(model, new ConversionOptions(FlipSettings.Off, 8, 16, new[] { "output" }));
        var after = ModelTestKit.Logits(model, tokens);
        Assert.True(before.equal(after).all().item<bool>());
    }

    [Fact]
    public void Flips_change_the_output_depend_on_the_step_and_evaluation_does_not_advance_it()
    {
        using var scope = NewDisposeScope();
        using var model = Debug();
        var tokens = ModelTestKit.Tokens(2, 32, 258);
        var clean = ModelTestKit.Logits(model, tokens);
        var heavy = SeedFlips with { XPFrac = 0.0625, WPFrac = 0.0625 };
        var converted = BitFlipConverter.Convert(model, new ConversionOptions(heavy, 0, 1, new[] { "output" }));
        var first = ModelTestKit.Logits(model, tokens);
        var second = ModelTestKit.Logits(model, tokens);
        Assert.False(first.equal(clean).all().item<bool>(), "flips must change the logits");
        Assert.True(first.equal(second).all().item<bool>(), "same step → same masks");
        Assert.Equal(0, converted.Step.Value);
        converted.Step.Value++;
        Assert.False(ModelTestKit.Logits(model, tokens).equal(first).all().item<bool>(), "next step → new masks");
    }
}
