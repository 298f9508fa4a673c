using System.Text.Json;
using Bflora.Bench;
using Bflora.Tests.Cli;
using Xunit;

namespace Bflora.Tests.Bench;

public class BenchQuickTests
{
    /// <summary>
    /// The real CLI, every measurement in its tiny variant (the 2-rank one under mpirun included): all nine names come
    /// out as finite numbers. No thresholds: on a shared 2-core machine the values say nothing about the goals.
    /// </summary>
    [Fact]
    public void Bench_quick_writes_every_ratio_as_a_finite_number()
    {
        string file = Path.Combine(Path.GetTempPath(), $"bflora-bench-{Guid.NewGuid():N}.json");
        try
        {
            var result = CliRunner.Run(new[] { "bench", "--quick", "--json", file }, TimeSpan.FromMinutes(5));
            Assert.True(result.ExitCode == 0, result.Stderr);
            using var json = JsonDocument.Parse(File.ReadAllText(file));
            foreach (string name in BenchRun.Names)
            {
                Assert.True(json.RootElement.TryGetProperty(name, out var value), $"{name} missing");
                Assert.Equal(JsonValueKind.Number, value.ValueKind);
                Assert.True(double.IsFinite(value.GetDouble()), $"{name} = {value}");
                Assert.Contains(name, result.Stdout);
            }
        }
        finally
        {
            File.Delete(file);
        }
    }
}
