using Bflora.Bitflip;
using Bflora.Config;
using Xunit;

namespace Bflora.Tests.Config;

public class ConfigTests
{
    [Fact]
    public void The_seed_70B_config_loads_with_its_values()
    {
        var c = BfloraConfig.Load(RepoPaths.Of("configs", "config_70b.toml"));
        Assert.Equal("70B", c.Model.Flavor);
        Assert.Equal("meta-llama/Meta-Llama-3-70B", c.Model.HfModelPath);
        Assert.Equal((2048, 2, 4, 20), (c.Training.SeqLen, c.Training.LocalBatchSize, c.Training.GradientAccumulationSteps, c.Training.Steps));
        Assert.Equal((2e-4, 0.01, 100, 1.0), (c.Training.Lr, c.Training.WeightDecay, c.Training.WarmupSteps, c.Training.MaxNorm));
        Assert.Equal((5, 500, 4), (c.Training.LogFreq, c.Training.SaveFreq, c.Parallelism.FsdpDegree));
        Assert.Equal((32, 32.0), (c.Lora.R, c.Lora.LoraAlpha));
        Assert.Equal(Math.Pow(0.5, 16), c.Bitflip.WPExp);
        Assert.Equal(Math.Pow(0.5, 16), c.Bitflip.WPFrac);
        Assert.Equal(Math.Pow(0.5, 16), c.Bitflip.XPExp);
        Assert.Equal(Math.Pow(0.5, 16), c.Bitflip.XPFrac);
        Assert.Equal(0L, c.Bitflip.BaseSeed);
        Assert.Equal(256.0, c.Bitflip.WZeroOutT);
        Assert.Equal(8192.0, c.Bitflip.XZeroOutT);
        Assert.Equal(new[] { "output" }, c.Bitflip.SkipPatterns);
        Assert.Equal("fast", c.Bitflip.Rng);
        Assert.Equal("config_70b", c.Name);
        Assert.Equal(Path.Combine("runs", "config_70b"), c.OutputFolder);
        Assert.Empty(c.Warnings);
    }

    [Theory]
    [InlineData("debug.toml")]
    [InlineData("demo.toml")]
    [InlineData("demo_pretrain.toml")]
    [InlineData("config_8b.toml")]
    public void Every_shipped_config_loads(string file) =>
        Assert.NotNull(BfloraConfig.Load(RepoPaths.Of("configs", file)));

    [Fact]
    public void The_demo_lora_config_names_the_model_a_default_demo_run_leaves()
    {
        var pretrain = BfloraConfig.Load(RepoPaths.Of("configs", "demo_pretrain.toml"));
        var lora = BfloraConfig.Load(RepoPaths.Of("configs", "demo.toml"));
        Assert.Equal(Path.Combine("runs", "demo", "pretrain", "checkpoints", $"step-{pretrain.Training.Steps}"),
            lora.Model.HfModelPath);
    }

    [Fact]
    public void Set_overrides_read_toml_values_and_bare_words()
    {
        var c = BfloraConfig.Load(RepoPaths.Of("configs", "debug.toml"), new[]
        {
            "training.gradient_accumulation_steps=2", "parallelism.fsdp_degree=1", "training.lr=1e-3",
            "bitflip.w_zero_out_t=512", "bitflip.rng=philox", "data.path=\"some/place\"", "bitflip.skip_patterns=[\"output\", \"wo\"]",
        });
        Assert.Equal(2, c.Training.GradientAccumulationSteps);
        Assert.Equal(1e-3, c.Training.Lr);
        Assert.Equal(512.0, c.Bitflip.WZeroOutT);
        Assert.Equal("philox", c.Bitflip.Rng);
        Assert.Equal("some/place", c.Data.Path);
        Assert.Equal(new[] { "output", "wo" }, c.Bitflip.SkipPatterns);
    }

    [Theory]
    [InlineData("[training]\nseq_lenn = 3", "training.seq_lenn")]
    [InlineData("[trainin]\nseq_len = 3", "[trainin]")]
    [InlineData("[training]\nseq_len = \"long\"", "training.seq_len")]
    [InlineData("[training]\nseq_len = 0", "training.seq_len")]
    [InlineData("[training]\nseq_len = -5", "training.seq_len")]
    [InlineData("[training]\nlr = \"fast\"", "training.lr")]
    [InlineData("[bitflip]\nw_p_exp = 1.5", "bitflip.w_p_exp")]
    [InlineData("[bitflip]\nx_p_frac = -0.1", "bitflip.x_p_frac")]
    [InlineData("[bitflip]\nw_zero_out_t = 0", "bitflip.w_zero_out_t")]
    [InlineData("[bitflip]\nx_zero_out_t = -1.0", "bitflip.x_zero_out_t")]
    [InlineData("[bitflip]\nrng = \"mersenne\"", "bitflip.rng")]
    [InlineData("[bitflip]\nskip_patterns = \"output\"", "bitflip.skip_patterns")]
    [InlineData("[lora]\nr = -1", "lora.r")]
    [InlineData("[parallelism]\nfsdp_degree = 0", "parallelism.fsdp_degree")]
    [InlineData("[model]\nflavor = \"13B\"", "model.flavor")]
    public void A_bad_key_type_or_range_is_an_error_naming_the_key(string extra, string named)
    {
        string toml = extra.StartsWith("[model]") ? extra + "\ninit = \"random\"" : "[model]\nflavor = \"debug\"\ninit = \"random\"\n" + extra;
        var e = Assert.Throws<ConfigException>(() => BfloraConfig.FromText(toml));
        Assert.Contains(named, e.Message);
        Assert.DoesNotContain("\n", e.Message);
    }

    [Fact]
    public void A_toml_syntax_error_and_a_missing_file_are_one_line_errors()
    {
        var syntax = Assert.Throws<ConfigException>(() => BfloraConfig.FromText("[model\nflavor = 1"));
        Assert.Contains("TOML syntax error", syntax.Message);
        Assert.DoesNotContain("\n", syntax.Message);
        var missing = Assert.Throws<ConfigException>(() => BfloraConfig.Load("/nonexistent/bflora.toml"));
        Assert.Contains("/nonexistent/bflora.toml", missing.Message);
    }

    [Fact]
    public void A_bad_override_names_the_key()
    {
        var unknown = Assert.Throws<ConfigException>(() =>
            BfloraConfig.Load(RepoPaths.Of("configs", "debug.toml"), new[] { "training.nope=1" }));
        Assert.Contains("training.nope", unknown.Message);
        var range = Assert.Throws<ConfigException>(() =>
            BfloraConfig.Load(RepoPaths.Of("configs", "debug.toml"), new[] { "training.seq_len=0" }));
        Assert.Contains("training.seq_len", range.Message);
        Assert.Throws<ConfigException>(() => BfloraConfig.Load(RepoPaths.Of("configs", "debug.toml"), new[] { "seq_len=4" }));
    }

    [Fact]
    public void Probabilities_snap_down_to_powers_of_one_half_with_a_warning()
    {
        Assert.Equal(16, FlipProbability.Halves(1.52587890625e-05));
        Assert.Equal(16, FlipProbability.Halves(1.526e-5));
        Assert.Equal(12, FlipProbability.Halves(2.44140625e-4));
        Assert.Equal(4, FlipProbability.Halves(0.1));
        Assert.Equal(1, FlipProbability.Halves(0.7));
        Assert.Null(FlipProbability.Halves(0));
        var c = BfloraConfig.FromText("[model]\nflavor = \"debug\"\ninit = \"random\"\n[bitflip]\nw_p_frac = 0.1");
        Assert.Single(c.Warnings);
        Assert.Contains("0.0625", c.Warnings[0]);
        Assert.Contains("bitflip.w_p_frac", c.Warnings[0]);
    }
}
