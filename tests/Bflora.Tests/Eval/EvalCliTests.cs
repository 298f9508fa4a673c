using System.Text;
using System.Text.Json;
using Bflora.Config;
using Bflora.Models;
using Bflora.Tests.Checkpoints;
using Bflora.Tests.Cli;
using Xunit;
using static TorchSharp.torch;

namespace Bflora.Tests.Eval;

/// <summary>`bflora eval` as a user runs it, checked against a cross-entropy computed here by hand.</summary>
public class EvalCliTests
{
    static readonly TimeSpan Timeout = TimeSpan.FromSeconds(120);

    /// <summary>A one-document corpus of 400 ASCII bytes: BOS + 400 ids = 6 windows of 64 + 1 with stride 64.</summary>
    static string TinyCorpus(TempFolder dir)
    {
        var text = new StringBuilder();
        for (int i = 0; text.Length < 400; i++) text.Append($"line {i}: the quick brown fox. ");
        string path = dir.File("tiny.txt");
        File.WriteAllText(path, text.ToString()[..400]);
        return path;
    }

    static (JsonElement Json, CliResult Run) Eval(TempFolder dir, string corpus, params string[] extra) =>
        EvalWith("configs/debug.toml", dir, corpus, extra);

    static (JsonElement Json, CliResult Run) EvalWith(string config, TempFolder dir, string corpus, params string[] extra)
    {
        string json = dir.File($"eval-{Guid.NewGuid():N}.json");
        var r = CliRunner.Run(["eval", "--config", config, "--set", $"data.path=\"{corpus}\"", "--json", json,
            .. extra], Timeout);
        Assert.True(r.ExitCode == 0, r.Stderr);
        return (JsonDocument.Parse(File.ReadAllText(json)).RootElement.Clone(), r);
    }

    [Fact]
    public void Clean_eval_is_the_token_weighted_cross_entropy_of_the_first_windows()
    {
        using var dir = new TempFolder();
        string corpus = TinyCorpus(dir);
        var (json, _) = Eval(dir, corpus, "--num-samples", "3");
        Assert.Equal("clean", json.GetProperty("mode").GetString());
        Assert.Equal(3, json.GetProperty("sequences").GetInt32());
        Assert.Equal(3 * 64, json.GetProperty("tokens").GetInt64());
        double loss = json.GetProperty("loss").GetDouble();
        Assert.Equal(Math.Exp(loss), json.GetProperty("perplexity").GetDouble(), 9);

        // By hand: the same random model, windows [BOS, b0, …] cut at 65 ids with stride 64, −log softmax in fp64.
        var config = BfloraConfig.Load(RepoPaths.Of("configs", "debug.toml"), new[] { $"data.path=\"{corpus}\"" });
        var spec = ModelBuilder.Resolve(config);
        using var model = ModelBuilder.Build(config, spec.Args, null);
        var ids = new[] { (long)spec.Tokenizer.BosId }.Concat(File.ReadAllBytes(corpus).Select(b => (long)b)).ToArray();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var windows = stack(Enumerable.Range(0, 3).Select(w => tensor(ids.Skip(64 * w).Take(65).ToArray())).ToArray());
        var logits = model.call(windows.narrow(1, 0, 64)).to(ScalarType.Float64);
        double expected = -logits.log_softmax(-1).gather(2, windows.narrow(1, 1, 64).unsqueeze(2)).mean().item<double>();
        Assert.True(Math.Abs(loss - expected) <= 1e-5 * expected, $"eval says {loss}, by hand {expected}");
    }

    [Fact]
    public void More_samples_than_windows_evaluates_all_with_a_warning()
    {
        using var dir = new TempFolder();
        var (json, r) = Eval(dir, TinyCorpus(dir), "--num-samples", "1000");
        Assert.Equal(6, json.GetProperty("sequences").GetInt32());
        Assert.Contains("asked for 1000 samples but the data holds only 6 windows", r.Stderr);
    }

    [Fact]
    public void Bitflip_eval_uses_its_seed_and_repeats_with_the_same_one()
    {
        using var dir = new TempFolder();
        string corpus = TinyCorpus(dir);
        // Exponent flips at 0.5^4 so that a seed visibly changes the loss of this small sample.
        string[] flips = ["--num-samples", "6", "--bitflip", "--set", "bitflip.x_p_exp=0.0625", "--set", "bitflip.w_p_exp=0.0625"];
        double Loss(params string[] extra)
        {
            var (json, _) = Eval(dir, corpus, [.. flips, .. extra]);
            Assert.Equal("bitflip", json.GetProperty("mode").GetString());
            return json.GetProperty("loss").GetDouble();
        }
        // Seeds are (base_seed + step·1000003 + 4·layer) & 0x7FFFFFFC, so base seeds 4 apart give other masks and
        // 4, 5, 6, 7 the same ones, as in the original.
        double one = Loss("--bitflip-seed", "4"), again = Loss("--bitflip-seed", "7"), two = Loss("--bitflip-seed", "8");
        Assert.Equal(one, again);
        Assert.NotEqual(one, two);
        var (clean, _) = Eval(dir, corpus, "--num-samples", "6");
        Assert.NotEqual(clean.GetProperty("loss").GetDouble(), one);
        // base_seed from the config is what --bitflip-seed replaces: the same value gives the same flips.
        Assert.Equal(one, Loss("--set", "bitflip.base_seed=4"));

        // A config without base_seed evaluates with the original eval's 42.
        string unseeded = dir.File("unseeded.toml");
        File.WriteAllLines(unseeded, File.ReadAllLines(RepoPaths.Of("configs", "debug.toml")).Where(l => !l.StartsWith("base_seed")));
        var (fallback, _) = EvalWith(unseeded, dir, corpus, flips);
        Assert.Equal(Loss("--bitflip-seed", "42"), fallback.GetProperty("loss").GetDouble());
        Assert.NotEqual(Loss("--bitflip-seed", "0"), fallback.GetProperty("loss").GetDouble());
    }
}
