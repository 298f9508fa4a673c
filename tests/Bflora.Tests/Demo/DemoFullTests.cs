using System.Text.Json;
using Bflora.Tests.Cli;
using Xunit;

namespace Bflora.Tests.Demo;

/// <summary>The demo's promise, on the full run a user gets from `./bflora demo` (about 3 minutes on 2 cores).</summary>
public sealed class DemoFullTests : IDisposable
{
    private readonly string _out = Directory.CreateTempSubdirectory("bflora-demo-full-").FullName;

    public void Dispose() => Directory.Delete(_out, recursive: true);

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
