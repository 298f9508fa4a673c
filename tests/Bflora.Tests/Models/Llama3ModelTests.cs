using System.Numerics;
using Bflora.Models.Llama3;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Bflora.Tests.Models;

public class Llama3ModelTests
{
    [Fact]
    public void Logits_at_a_position_do_not_depend_on_later_tokens()
    {
        using var scope = NewDisposeScope();
        using var model = ModelTestKit.Random(ModelTestKit.Tiny);
        var tokens = ModelTestKit.Tokens(2, 12, ModelTestKit.Tiny.VocabSize);
        var changed = tokens.clone();
        changed[TensorIndex.Colon, 6] = (tokens[TensorIndex.Colon, 6] + 1) % ModelTestKit.Tiny.VocabSize;

        var a = ModelTestKit.Logits(model, tokens);
        var b = ModelTestKit.Logits(model, changed);

        Assert.Equal(0f, (a.narrow(1, 0, 6) - b.narrow(1, 0, 6)).abs().max().item<float>());
        Assert.False(a.narrow(1, 6, 6).allclose(b.narrow(1, 6, 6)), "positions from the change on must differ");
    }

    [Fact]
    public void Grouped_kv_heads_match_a_model_with_kv_heads_repeated_by_hand()
    {
        using var scope = NewDisposeScope();
        var gqaArgs = ModelTestKit.Tiny;
        var fullArgs = gqaArgs with { NKvHeads = gqaArgs.NHeads };
        using var gqa = ModelTestKit.Random(gqaArgs);
        using var full = new Transformer(fullArgs, META, ScalarType.Float32);
        int repeat = gqaArgs.NHeads / gqaArgs.NKvHeads, hd = gqaArgs.HeadDim;
        ModelInit.Materialize(full, (name, _) =>
        {
            var source = gqa.get_parameter(name)!.detach();
            if (!name.EndsWith("attention.wk.weight") && !name.EndsWith("attention.wv.weight")) return source.clone();
            // Query head h reads KV head h / repeat: duplicate each KV head's rows `repeat` times in place.
            return source.view(gqaArgs.NKvHeads, 1, hd, gqaArgs.Dim).expand(gqaArgs.NKvHeads, repeat, hd, gqaArgs.Dim)
                .reshape(gqaArgs.NHeads * hd, gqaArgs.Dim).clone();
        });
        full.eval();
        var tokens = ModelTestKit.Tokens(2, 10, gqaArgs.VocabSize);

        var expected = ModelTestKit.Logits(full, tokens);
        var actual = ModelTestKit.Logits(gqa, tokens);

        Assert.True(actual.allclose(expected, rtol: 1e-5, atol: 1e-5),
            $"max difference {(actual - expected).abs().max().item<float>()}");
    }

    [Fact]
    public void Rope_rotates_interleaved_pairs_as_complex_numbers()
    {
        using var scope = NewDisposeScope();
        const int seq = 9, heads = 3, hd = 8;
        var scaling = new RopeScaling(8, 1, 4, 16);
        var x = randn(new long[] { 2, seq, heads, hd }, generator: new Generator(3));
        var (cos, sin) = Rope.Tables(seq, hd, 500000, scaling);
        var rotated = Rope.Apply(x, cos, sin);

        var freqs = Rope.Frequencies(hd, 500000, scaling);
        var xs = x.data<float>().ToArray();
        var ys = rotated.data<float>().ToArray();
        for (int b = 0; b < 2; b++)
        for (int t = 0; t < seq; t++)
        for (int h = 0; h < heads; h++)
        for (int j = 0; j < hd / 2; j++)
        {
            int at = ((b * seq + t) * heads + h) * hd + 2 * j;
            var z = new Complex(xs[at], xs[at + 1]) * Complex.FromPolarCoordinates(1, t * freqs[j]);
            Assert.Equal(z.Real, ys[at], 4);
            Assert.Equal(z.Imaginary, ys[at + 1], 4);
        }
    }

    [Fact]
    public void Rope_frequencies_are_theta_to_the_minus_2j_over_d()
    {
        var f = Rope.Frequencies(128, 500000, null);
        Assert.Equal(64, f.Length);
        Assert.Equal(1.0, f[0]);
        Assert.Equal(0.0014142135623730951, f[32], 15);   // 500000^(-64/128) = 1/√500000
        Assert.Equal(2.0e-6 * Math.Pow(500000, 2.0 / 128), f[63], 15);   // 500000^(-126/128)
        var oneB = Flavors.Get("1B");
        Assert.Equal((500000.0, 32.0), (oneB.RopeTheta, oneB.RopeScaling!.Factor));
    }

    [Fact]
    public void Llama31_scaling_keeps_high_frequencies_divides_low_ones_and_blends_between()
    {
        const int hd = 128;
        var plain = Rope.Frequencies(hd, 500000, null);
        var scaled = Rope.Frequencies(hd, 500000, RopeScaling.Llama31);
        Assert.Equal(plain[0], scaled[0]);                       // wavelength 2π: far below 8192/4
        Assert.Equal(plain[^1] / 8, scaled[^1], 15);             // wavelength far above 8192
        int mid = Enumerable.Range(0, hd / 2).First(j => 2 * Math.PI / plain[j] is > 2048 and < 8192);
        double smooth = (8192 / (2 * Math.PI / plain[mid]) - 1) / (4 - 1);
        Assert.Equal((1 - smooth) * plain[mid] / 8 + smooth * plain[mid], scaled[mid], 15);
    }

    [Fact]
    public void Flavors_have_the_official_dimensions()
    {
        var b8 = Flavors.Get("8B");
        Assert.Equal((4096, 32, 32, 8, 14336, 128256), (b8.Dim, b8.NLayers, b8.NHeads, b8.NKvHeads, b8.FfnHidden, b8.VocabSize));
        var b70 = Flavors.Get("70B");
        Assert.Equal((8192, 80, 64, 8, 28672), (b70.Dim, b70.NLayers, b70.NHeads, b70.NKvHeads, b70.FfnHidden));
        Assert.Equal(70_553_706_496L, b70.TotalParams);
        Assert.Equal(8_030_261_248L, b8.TotalParams);
        Assert.True(Flavors.Get("1B").TieEmbeddings);
    }

    [Fact]
    public void A_meta_built_70B_allocates_nothing()
    {
        using var model = new Transformer(Flavors.Get("70B"), META);
        Assert.All(model.parameters(), p => Assert.True(p.is_meta));
        Assert.Equal(560, model.LinearSlots().Count());
        Assert.Equal(Flavors.Get("70B").TotalParams, model.parameters().Sum(p => p.numel()));
    }

    [Fact]
    public void Replacing_a_linear_keeps_parameter_names_and_order()
    {
        using var model = new Transformer(ModelTestKit.Tiny, META, ScalarType.Float32);
        var before = model.named_parameters().Select(p => p.name).ToList();
        var (name, host, local) = model.LinearSlots().First(s => s.Name == "layers.1.attention.wk");
        host.ReplaceLinear(local, nn.Linear(ModelTestKit.Tiny.Dim, 16, hasBias: false, device: META));
        Assert.Equal(before, model.named_parameters().Select(p => p.name).ToList());
        Assert.Equal("layers.1.attention.wk", name);
    }
}
