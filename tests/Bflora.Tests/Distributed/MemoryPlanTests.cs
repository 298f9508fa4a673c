using System.Text.Json;
using Bflora.Config;
using Bflora.Distributed;
using Bflora.Models.Llama3;
using Bflora.Tests.Cli;
using Xunit;

namespace Bflora.Tests.Distributed;

public class MemoryPlanTests
{
    private static MemoryPlan Plan70B(int world, params string[] overrides)
    {
        var config = BfloraConfig.Load(RepoPaths.Of("configs", "config_70b.toml"), overrides);
        return MemoryPlanner.Compute(MemoryPlanner.ResolveArgs(config), PlanInputs.From(config, world));
    }

    [Fact]
    public void Config_70b_at_world_4_matches_the_hand_formulas()
    {
        var p = Plan70B(4);
        // 70B: d 8192, 80 layers, kv dim 8 · 128 = 1024, FFN 28672, vocab 128256; local batch 2 × seq 2048 = 4096 tokens.
        const long d = 8192, L = 80, kvd = 1024, F = 28672, V = 128256, T = 4096, r = 32;
        const long block = 2 * d * d + 2 * d * kvd + 3 * d * F + 2 * d;          // 855,654,400
        Assert.Equal(70_553_706_496L, L * block + 2 * V * d + d);                 // the 70.55e9 of Llama-3-70B
        // LoRA of 7 Linears per block, A [r, in] + B [out, r]; output is skipped by skip_patterns.
        const long loraBlock = r * (2 * (d + d) + 2 * (d + kvd) + 3 * (d + F));   // 5,177,344
        // Every unit divides by 4 exactly, so the shard is a quarter of all bf16 bytes, LoRA included.
        Assert.Equal((70_553_706_496L + L * loraBlock) * 2 / 4, p.Params);
        Assert.Equal(3 * 4 * L * loraBlock / 4, p.LoraMasterAndOptimizer);        // fp32 master, m, v of the shard
        // fp32 shard + one block's gradient before the reduce-scatter + the micro-batch shard + two ring buffers
        Assert.Equal(4 * L * loraBlock / 4 + 4 * loraBlock + 3 * 4 * loraBlock / 4, p.Grads);

        // The output is skipped, so embedding and output are vocab-parallel and never gathered: both buffers hold a
        // block with its LoRA (the head unit, the final norm, fits in buffer 0).
        Assert.Equal(2 * (block + loraBlock), p.GatheredBlock);
        Assert.Equal("transformer block", p.GatheredUnit);
        Assert.Equal(2 * (block + loraBlock), p.Prefetch);

        long activations = 2 * L * T * d                                          // block inputs kept per layer
                           + 2 * T * (14 * d + 3 * kvd + 5 * F + 7 * r) + 4 * T * 64 // one block recomputed
                           + T * 2 * d + 16 * 4 * T * (V / 4)                     // final norm; fp32 log-sum-exp of the logits
                           + 4 * T * d * 8;                                       // 4 ranks' hidden states, their grads
        Assert.Equal(activations, p.Activations);
        Assert.Equal(p.Params + p.GatheredBlock + p.Prefetch + p.LoraMasterAndOptimizer + p.Grads + p.Activations, p.Total);
    }

    [Fact]
    public void Two_ranks_hold_about_half_the_parameters_of_one()
    {
        var one = Plan70B(1);
        var two = Plan70B(2);
        Assert.True(two.Params <= 0.55 * one.Params, $"{two.Params} vs {one.Params}");
        Assert.Equal(0, one.GatheredBlock);   // world 1: nothing sharded, nothing gathered
        Assert.True(two.LoraMasterAndOptimizer <= 0.55 * one.LoraMasterAndOptimizer);
        // One rank keeps every block's activations; two recompute blocks, keeping their inputs and (vocab-parallel
        // head) every rank's final hidden states.
        const long d = 8192, L = 80, kvd = 1024, F = 28672, V = 128256, T = 4096, r = 32;
        const long blockSet = 2 * T * (14 * d + 3 * kvd + 5 * F + 7 * r) + 4 * T * 64, head = T * (2 * d + 10 * V);
        Assert.Equal(L * blockSet + head, one.Activations);
        Assert.Equal(2 * L * T * d + blockSet + T * 2 * d + 16 * T * V + 2 * T * d * 8, two.Activations);
        // Without checkpointing two ranks keep every block's set too.
        var kept = Plan70B(2, "parallelism.activation_checkpointing=false");
        Assert.Equal(L * blockSet + T * 2 * d + 16 * T * V + 2 * T * d * 8, kept.Activations);
        Assert.Equal(two.Params, kept.Params);
    }

    [Fact]
    public void Full_training_keeps_master_and_adam_state_for_every_weight_shard()
    {
        var p = Plan70B(4, "training.trainable=\"full\"");
        Assert.Equal(12 * (p.Params / 2), p.LoraMasterAndOptimizer);
        // + the largest unit's unsharded fp32 gradient, the micro-batch shard and the two ring buffers. The head trains,
        // so it is not vocabulary-parallel: its unit is the output and the final norm, gathered like a block.
        const long head = 128256L * 8192 + 8192;
        Assert.Equal(4 * (p.Params / 2) + 4 * head + 3 * 4 * head / 4, p.Grads);
    }

    [Fact]
    public void The_plan_command_prints_a_table_and_writes_the_json_contract()
    {
        string json = Path.Combine(Path.GetTempPath(), $"bflora-plan-{Guid.NewGuid():N}.json");
        try
        {
            var r = CliRunner.Run(new[] { "plan", "--config", "configs/config_70b.toml", "--world", "4", "--json", json },
                TimeSpan.FromSeconds(30));
            Assert.True(r.ExitCode == 0, r.Stderr);
            Assert.Contains("total", r.Stdout);
            using var doc = JsonDocument.Parse(File.ReadAllText(json));
            Assert.Equal(4, doc.RootElement.GetProperty("world").GetInt32());
            var perRank = doc.RootElement.GetProperty("per_rank");
            foreach (var key in new[] { "params", "gathered_block", "lora_master_and_optimizer", "grads", "activations", "total" })
                Assert.True(perRank.GetProperty(key).GetInt64() > 0, key);
            Assert.Equal((70_553_706_496L + 80L * 5_177_344) * 2 / 4, perRank.GetProperty("params").GetInt64());   // + LoRA shards
        }
        finally
        {
            File.Delete(json);
        }
    }

    [Fact]
    public void The_world_defaults_to_fsdp_degree_and_a_bad_world_is_exit_2()
    {
        var r = CliRunner.Run(new[] { "plan", "--config", "configs/debug.toml", "--set", "parallelism.fsdp_degree=2" }, TimeSpan.FromSeconds(30));
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains("world 2", r.Stdout);

        var bad = CliRunner.Run(new[] { "plan", "--config", "configs/debug.toml", "--world", "0" }, TimeSpan.FromSeconds(30));
        Assert.Equal(2, bad.ExitCode);
        Assert.StartsWith("error:", Assert.Single(bad.StderrLines));
    }

    [Fact]
    public void A_flavor_with_the_tokenizers_vocabulary_takes_it_from_the_tokenizer()
    {
        var config = BfloraConfig.Load(RepoPaths.Of("configs", "debug.toml"));
        Assert.Equal(258, MemoryPlanner.ResolveArgs(config).VocabSize);
        Assert.Equal(Flavors.Get("debug").Dim, MemoryPlanner.ResolveArgs(config).Dim);
    }
}
