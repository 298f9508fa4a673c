using System.Text.Json;
using Bflora.Bench;
using Bflora.Models.Llama3;
using Bflora.Tests.Cli;
using Xunit;

namespace Bflora.Tests.Bench;

/// <summary>
/// `bench --throughput`, the measurement `bench --device cuda` makes on a GPU, run here on the CPU in its quick shape:
/// one JSON line whose numbers agree with each other. No thresholds on the values (a shared 2-core machine).
/// </summary>
public class BenchThroughputTests
{
    [Fact]
    public void Throughput_prints_one_json_line_whose_mfu_and_rate_follow_from_its_step_time()
    {
        string file = Path.Combine(Path.GetTempPath(), $"bflora-throughput-{Guid.NewGuid():N}.json");
        try
        {
            var r = CliRunner.Run(["bench", "--throughput", "--quick", "--batch", "3", "--peak-tflops", "0.5", "--json", file]);
            Assert.True(r.ExitCode == 0, r.Stderr);
            string line = Assert.Single(r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries));
            Assert.Equal(line, File.ReadAllText(file));
            var json = JsonDocument.Parse(line).RootElement;
            Assert.Equal("cpu", json.GetProperty("device").GetString());
            Assert.Equal(3, json.GetProperty("batch").GetInt32());
            Assert.Equal(32, json.GetProperty("seq_len").GetInt32());
            Assert.Equal(8, json.GetProperty("lora_r").GetInt32());
            Assert.Equal("given", json.GetProperty("peak_source").GetString());
            double step = json.GetProperty("step_s").GetDouble(), rate = json.GetProperty("tokens_per_s").GetDouble();
            Assert.True(step > 0);
            Assert.Equal(3 * 32 / step, rate, 6);
            // The CPU computes as it queues: the backward is done before the step's loss read and update.
            double queued = json.GetProperty("step_queued_s").GetDouble();
            Assert.InRange(queued, step / 4, step);
            long n = json.GetProperty("non_embedding_params").GetInt64();
            Assert.Equal(Flavors.Get("debug").NonEmbeddingParams, n);
            Assert.Equal(6.0 * n * rate / 0.5e12, json.GetProperty("mfu").GetDouble(), 12);
            double off = json.GetProperty("tokens_per_s_flips_off").GetDouble();
            Assert.True(off > 0);
            Assert.Equal(off / rate - 1, json.GetProperty("flip_overhead").GetDouble(), 6);
            Assert.Equal(JsonValueKind.Null, json.GetProperty("device_memory_used_gib").ValueKind);
            foreach (var ratio in new[] { "copy_gbps", "bitflip_vs_copy", "bitflip_philox_vs_copy" })
                Assert.True(json.GetProperty(ratio).GetDouble() > 0, ratio);
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public void The_gpu_shape_is_llama_3_2_1b_at_2048_tokens_with_the_batch_asked_for()
    {
        var shape = TrainShape.Llama1B(batch: 4, quick: false);
        Assert.Equal(Flavors.Get("1B"), shape.Args);
        Assert.Equal((2048, 4), (shape.SeqLen, shape.GlobalBatch));
        Assert.Equal((128256, 2048, 16, 32, 8, 8192, true),
            (shape.Args.VocabSize, shape.Args.Dim, shape.Args.NLayers, shape.Args.NHeads, shape.Args.NKvHeads,
             shape.Args.FfnHidden, shape.Args.TieEmbeddings));
        // 16 · (2·2048² + 2·2048·512 + 3·2048·8192 + 2·2048) + 2048: the N of 6·N·tokens.
        Assert.Equal(973_146_112L, shape.Args.NonEmbeddingParams);
    }

    [Fact]
    public void Mfu_is_six_n_tokens_over_the_peak()
    {
        Assert.Equal(0.6, TrainBench.Mfu(1_000_000, 100_000, 1e12), 12);
    }
}
