using System.Text.Json;
using Bflora.Tests.Cli;
using Xunit;

namespace Bflora.Tests.Demo;

/// <summary>`bflora demo` as a user runs it: --quick for its files and direction, the full run for its promise.</summary>
public sealed class DemoTests : IDisposable
{
    private readonly string _out = Directory.CreateTempSubdirectory("bflora-demo-").FullName;

    public void Dispose() => Directory.Delete(_out, recursive: true);

    [Fact]
    public void Quick_demo_shows_flips_hurting_and_lora_helping_and_writes_its_files()
    {
        var r = CliRunner.Run(new[] { "demo", "--quick", "--out", _out }, TimeSpan.FromMinutes(12));
        Assert.True(r.ExitCode == 0, r.Stderr);

        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(_out, "results.json")));
        var root = json.RootElement;
        double Loss(string key) => root.GetProperty(key).GetProperty("loss").GetDouble();
        Assert.Equal("clean", root.GetProperty("clean").GetProperty("mode").GetString());
        Assert.Equal("bitflip", root.GetProperty("bitflip").GetProperty("mode").GetString());
        Assert.Equal("bitflip", root.GetProperty("bitflip_lora").GetProperty("mode").GetString());
        Assert.True(Loss("bitflip") > Loss("clean"), $"bitflip {Loss("bitflip")} must be above clean {Loss("clean")}");
        Assert.True(Loss("bitflip_lora") < Loss("bitflip"), $"bitflip+LoRA {Loss("bitflip_lora")} must be below bitflip {Loss("bitflip")}");
        Assert.True(root.GetProperty("train").GetProperty("steps").GetInt64() > 0);
        Assert.True(root.GetProperty("train").GetProperty("tokens_per_s").GetDouble() > 0);
        foreach (var key in new[] { "clean", "bitflip", "bitflip_lora" })
        {
            var e = root.GetProperty(key);
            Assert.Equal(Math.Exp(e.GetProperty("loss").GetDouble()), e.GetProperty("perplexity").GetDouble(), 9);
            Assert.True(e.GetProperty("sequences").GetInt32() > 0 && e.GetProperty("tokens").GetInt64() > 0);
        }

        Assert.True(new FileInfo(Path.Combine(_out, "loss.png")).Length > 1000);
        Assert.True(File.Exists(Path.Combine(_out, "pretrain", "checkpoints", "step-120", "config.json")), "HF-layout model");
        Assert.True(File.Exists(Path.Combine(_out, "lora", "checkpoints", "step-60", "adapter_model.safetensors")), "PEFT adapter");
        Assert.Contains("| Bitflip + LoRA", r.Stdout);

        // Run again into the same folder, as a user reruns `./bflora demo`: it starts its stages over.
        var again = CliRunner.Run(new[] { "demo", "--quick", "--out", _out }, TimeSpan.FromMinutes(12));
        Assert.True(again.ExitCode == 0, again.Stderr);
        Assert.Equal(new[] { "step-60" }, Directory.GetDirectories(Path.Combine(_out, "lora", "checkpoints")).Select(Path.GetFileName));
    }

    [Fact]
    public void Full_demo_flips_cost_half_a_nat_and_lora_recovers_half_of_it()
    {
        var r = CliRunner.Run(new[] { "demo", "--out", _out }, TimeSpan.FromMinutes(30));
        Assert.True(r.ExitCode == 0, r.Stderr);
        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(_out, "results.json")));
        double Loss(string key) => json.RootElement.GetProperty(key).GetProperty("loss").GetDouble();
        double gap = Loss("bitflip") - Loss("clean"), recovered = (Loss("bitflip") - Loss("bitflip_lora")) / gap;
        Assert.True(gap >= 0.5, $"bit flips cost {gap:F3} nats (clean {Loss("clean"):F4}, bitflip {Loss("bitflip"):F4})");
        Assert.True(recovered >= 0.5, $"LoRA recovered {recovered:P0} of the gap (bitflip+LoRA {Loss("bitflip_lora"):F4})");
    }
}
