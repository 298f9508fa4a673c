using System.Text.Json;
using System.Text.RegularExpressions;
using Bflora.Lora;
using Bflora.Models.Llama3;
using Bflora.Tests.Cli;
using Xunit;
using static TorchSharp.torch;

namespace Bflora.Tests.Distributed;

/// <summary>
/// The sharded trainer (FSDP) on 2 real ranks against the single-process trainer with the same global batch: a
/// learning rate high enough that the LoRA weights move, so the comparison covers the sharded optimizer, clipping and
/// the gathered adapter, not just the first forward.
/// </summary>
[Collection("mpi")]
public class FsdpTrainingTests
{
    private static readonly string[] Common =
    {
        "train", "--config", "configs/debug.toml", "--set", "training.log_freq=1",
        "--set", "training.lr=1e-2", "--set", "training.warmup_steps=1", "--set", "training.save_freq=4",
    };

    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(180);

    /// <param name="ranks">4 ranks pad the byte vocabulary (258 rows) and the flat units.</param>
    /// <param name="skip">The configs' ["output"] runs the head vocabulary-parallel; [] converts it (LoRA, flips), so
    /// it is gathered whole like a block.</param>
    [Theory]
    [InlineData(2, "[\"output\"]", true)]
    [InlineData(2, "[\"output\"]", false)]
    [InlineData(2, "[]", true)]
    [InlineData(4, "[\"output\"]", true)]
    public void Sharded_ranks_train_like_one_rank_and_hold_their_share_of_the_parameters(int ranks, string skip, bool checkpointing)
    {
        string root = TempRoot();
        try
        {
            string[] steps = { "--steps", "8", "--set", $"bitflip.skip_patterns={skip}",
                "--set", $"parallelism.activation_checkpointing={(checkpointing ? "true" : "false")}" };
            var (two, _) = MpiRunner.Bflora(ranks,
                Common.Concat(steps).Concat(new[] { "--set", $"parallelism.fsdp_degree={ranks}", "--out", Path.Combine(root, "w2") }).ToArray(),
                Timeout);
            Assert.True(two.ExitCode == 0, $"{two.Stdout}\n{two.Stderr}");
            var one = CliRunner.Run(Common.Concat(steps).Concat(new[]
                { "--set", $"training.gradient_accumulation_steps={ranks}", "--out", Path.Combine(root, "w1") }).ToArray(), Timeout);
            Assert.True(one.ExitCode == 0, one.Stderr);

            var w2 = Rows(Path.Combine(root, "w2"));
            var w1 = Rows(Path.Combine(root, "w1"));
            Assert.Equal(8, w2.Count);
            // The same windows and flips: losses agree to 1e-3 relative (measured: 2e-5 with the gathered head,
            // 3e-4 with the vocabulary-parallel one, whose log-sum-exp is fp32 rather than bf16). Gradients differ
            // by where micro-batches are summed (bf16 .grad at world 1, fp32 reduce-scatter at world 2).
            AssertClose(w1, w2);

            long bytes1 = ParamsPerRank(one.Stdout), bytes2 = ParamsPerRank(two.Stdout);
            Assert.True(bytes2 <= (1.0 / ranks + 0.05) * bytes1, $"per-rank parameter bytes: {bytes2} at {ranks} ranks vs {bytes1} at 1");

            // The adapter gathered to rank 0 matches the single-process adapter.
            var args = Flavors.Get("debug") with { VocabSize = new Bflora.Data.ByteTokenizer().VocabSize };
            var a2 = PeftAdapter.ReadWeights(Path.Combine(root, "w2", "checkpoints", "step-8"), args, ScalarType.Float32);
            var a1 = PeftAdapter.ReadWeights(Path.Combine(root, "w1", "checkpoints", "step-8"), args, ScalarType.Float32);
            Assert.Equal(a1.Keys.Order(), a2.Keys.Order());
            // Adam moves every element by ~lr per step whatever the gradient's size, so elements with near-zero
            // gradients may go different ways; the tensors as a whole must agree.
            foreach (var (name, (a, b)) in a1)
            {
                Assert.True(RelativeDifference(a2[name].A, a) < 0.02, $"{name}.lora_A: {RelativeDifference(a2[name].A, a)}");
                Assert.True(RelativeDifference(a2[name].B, b) < 0.05, $"{name}.lora_B: {RelativeDifference(a2[name].B, b)}");
            }
        }
        finally
        {
            if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public void A_sharded_run_resumes_exactly_at_its_world_size_and_reshards_to_another()
    {
        string root = TempRoot();
        try
        {
            // 8 steps with checkpoints at 4 and 8; then step-8 is removed and the run resumes from step 4.
            string run = Path.Combine(root, "run");
            TrainTwoRanks(run, "--steps", "8");
            var expected = Rows(run);
            Assert.True(File.Exists(Path.Combine(run, "checkpoints", "step-4", "trainer_state", "optimizer-rank1-of-2.safetensors")));
            CopyRunUpTo(run, 4, Path.Combine(root, "to-one"));
            Directory.Delete(Path.Combine(run, "checkpoints", "step-8"), recursive: true);
            TrainTwoRanks(run, "--steps", "8", "--resume");
            var actual = Rows(run);
            Assert.Equal(expected.Count, actual.Count);
            for (int i = 0; i < expected.Count; i++)
            {
                Assert.Equal(expected[i].Loss, actual[i].Loss);
                Assert.Equal(expected[i].Norm, actual[i].Norm, 6);
            }

            // 2 ranks → 1 (accumulating 2, the same global batch): each rank's optimizer shards are read back into one
            // slot per parameter, and steps 5-8 go as the 2-rank run's did, within the two worlds' rounding.
            string toOne = Path.Combine(root, "to-one");
            var one = CliRunner.Run(Common.Concat(new[]
                { "--steps", "8", "--set", "training.gradient_accumulation_steps=2", "--out", toOne, "--resume" }).ToArray(), Timeout);
            Assert.True(one.ExitCode == 0, one.Stderr);
            AssertClose(expected, Rows(toOne));

            // 1 rank → 2: the single process's step-8 continued to step 12 by one rank and, resharded, by two.
            string toTwo = Path.Combine(root, "to-two");
            CopyRunUpTo(toOne, 8, toTwo);
            var onward = CliRunner.Run(Common.Concat(new[]
                { "--steps", "12", "--set", "training.gradient_accumulation_steps=2", "--out", toOne, "--resume" }).ToArray(), Timeout);
            Assert.True(onward.ExitCode == 0, onward.Stderr);
            TrainTwoRanks(toTwo, "--steps", "12", "--resume");
            Assert.Equal(12, Rows(toTwo).Count);
            AssertClose(Rows(toOne), Rows(toTwo));
        }
        finally
        {
            if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public void Full_training_shards_the_weights_and_their_optimizer_state_and_trains_like_one_rank()
    {
        string root = TempRoot();
        try
        {
            string[] full = { "--steps", "6", "--set", "training.trainable=full", "--set", "training.lr=1e-3", "--set", "training.save_freq=3" };
            var (twoRun, _) = MpiRunner.Bflora(2, Common.Concat(full)
                .Concat(new[] { "--set", "parallelism.fsdp_degree=2", "--out", Path.Combine(root, "w2") }).ToArray(), Timeout);
            Assert.True(twoRun.ExitCode == 0, $"{twoRun.Stdout}\n{twoRun.Stderr}");
            var one = CliRunner.Run(Common.Concat(full).Concat(new[]
                { "--set", "training.gradient_accumulation_steps=2", "--out", Path.Combine(root, "w1") }).ToArray(), Timeout);
            Assert.True(one.ExitCode == 0, one.Stderr);
            var expected = Rows(Path.Combine(root, "w2"));
            AssertClose(Rows(Path.Combine(root, "w1")), expected);
            Assert.True(ParamsPerRank(twoRun.Stdout) <= 0.55 * ParamsPerRank(one.Stdout), twoRun.Stdout);

            // Every weight trained on 2 ranks as on 1: the fp32 masters (the 2 ranks' shards read back per parameter)
            // moved alike, and the HF model of the checkpoint is those masters rounded to bf16.
            var config = Bflora.Config.BfloraConfig.Load(RepoPaths.Of("configs", "debug.toml"));
            var spec = Bflora.Models.ModelBuilder.Resolve(config);
            using var initial = Bflora.Models.ModelBuilder.Build(config, spec.Args, null);
            string w1State = Path.Combine(root, "w1", "checkpoints", "step-6", "trainer_state");
            string w2Step = Path.Combine(root, "w2", "checkpoints", "step-6");
            var masters1 = Bflora.Checkpoints.SafetensorsFile.Open(Path.Combine(w1State, "optimizer.safetensors"));
            var state2 = JsonSerializer.Deserialize<Bflora.Training.TrainerState>(
                File.ReadAllText(Path.Combine(w2Step, "trainer_state", "state.json")))!;
            var slots = initial.named_parameters().Where(p => p.name != "output.weight" || !spec.Args.TieEmbeddings)
                .Select(p => (Slot: new Bflora.Training.AdamWSlot(p.name, zeros(p.parameter.shape), zeros(p.parameter.shape),
                    zeros(p.parameter.shape)), Layout: new Bflora.Distributed.FlatLayout(new[] { (p.name, p.parameter.shape) }, 1), Start: p.parameter))
                .ToList();
            Bflora.Training.OptimizerState.Read(Path.Combine(w2Step, "trainer_state"), state2.OptimizerSlots!, 2,
                slots.Select(s => (s.Slot, s.Layout)).ToList(), 0);
            var model2 = Bflora.Checkpoints.LlamaHfCheckpoint.Open(w2Step, spec.Args);
            foreach (var (slot, _, start) in slots)
            {
                var m1 = masters1.Load($"{slot.Name}/master");
                var moved = (m1 - start.to(ScalarType.Float32)).norm().item<float>();
                var apart = (slot.Master - m1).norm().item<float>();
                Assert.True(moved > 0 && apart <= 0.05 * moved, $"{slot.Name}: moved {moved} at 1 rank, 2 ranks {apart} apart");
                using var written = empty(slot.Master.shape, ScalarType.BFloat16);
                model2.Read(slot.Name, written);
                Assert.True(written.equal(slot.Master.to(ScalarType.BFloat16)).all().item<bool>(), $"{slot.Name} in the HF model");
            }

            // Resumed from step 3 on 2 ranks: the same losses exactly; resharded onto 1 rank: the same within rounding.
            CopyRunUpTo(Path.Combine(root, "w2"), 3, Path.Combine(root, "to-one"));
            var toOne = CliRunner.Run(Common.Concat(full).Concat(new[]
                { "--set", "training.gradient_accumulation_steps=2", "--out", Path.Combine(root, "to-one"), "--resume" }).ToArray(), Timeout);
            Assert.True(toOne.ExitCode == 0, toOne.Stderr);
            AssertClose(expected, Rows(Path.Combine(root, "to-one")));
            Directory.Delete(w2Step, recursive: true);
            var (resumed, _) = MpiRunner.Bflora(2, Common.Concat(full)
                .Concat(new[] { "--set", "parallelism.fsdp_degree=2", "--out", Path.Combine(root, "w2"), "--resume" }).ToArray(), Timeout);
            Assert.True(resumed.ExitCode == 0, $"{resumed.Stdout}\n{resumed.Stderr}");
            Assert.Equal(expected.Select(r => r.Loss), Rows(Path.Combine(root, "w2")).Select(r => r.Loss));
        }
        finally
        {
            if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
        }
    }

    /// <summary>A resumed copy of a run: its metrics and one checkpoint.</summary>
    private static void CopyRunUpTo(string run, int step, string copy)
    {
        string from = Path.Combine(run, "checkpoints", $"step-{step}"), to = Path.Combine(copy, "checkpoints", $"step-{step}");
        foreach (var file in Directory.GetFiles(from, "*", SearchOption.AllDirectories))
        {
            string target = Path.Combine(to, Path.GetRelativePath(from, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }
        File.Copy(Path.Combine(run, "metrics.jsonl"), Path.Combine(copy, "metrics.jsonl"));
    }

    /// <summary>Rows of 1 and N ranks with the same global batch agree within their rounding (see the first test).</summary>
    private static void AssertClose(List<(double Loss, double Norm)> expected, List<(double Loss, double Norm)> actual)
    {
        Assert.Equal(expected.Count, actual.Count);
        for (int i = 0; i < expected.Count; i++)
        {
            Assert.True(Math.Abs(expected[i].Loss - actual[i].Loss) <= 1e-3 * expected[i].Loss, $"step {i + 1}: loss {expected[i].Loss} vs {actual[i].Loss}");
            Assert.True(Math.Abs(expected[i].Norm - actual[i].Norm) <= 2e-3 * expected[i].Norm, $"step {i + 1}: norm {expected[i].Norm} vs {actual[i].Norm}");
        }
    }

    private static double RelativeDifference(Tensor actual, Tensor expected) =>
        (actual - expected).norm().item<float>() / Math.Max(expected.norm().item<float>(), 1e-12);

    [Fact]
    public void Each_rank_loads_its_ranges_of_a_safetensors_checkpoint()
    {
        // The debug model's seeded random weights written as an HF folder (q/k rows permuted to HF order): loading
        // them shard by shard must reproduce the random-init run exactly.
        string root = TempRoot();
        try
        {
            string model = Path.Combine(root, "model");
            var config = Bflora.Config.BfloraConfig.Load(RepoPaths.Of("configs", "debug.toml"));
            var spec = Bflora.Models.ModelBuilder.Resolve(config);
            using (var built = Bflora.Models.ModelBuilder.Build(config, spec.Args, null))
                Bflora.Checkpoints.LlamaHfCheckpoint.Export(model,
                    built.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter), spec.Args,
                    spec.Tokenizer.BosId, spec.Tokenizer.EosId, maxShardBytes: 64 * 1024);
            TrainTwoRanks(Path.Combine(root, "random"), "--steps", "3");
            TrainTwoRanks(Path.Combine(root, "loaded"), "--steps", "3", "--set", "model.init=pretrained", "--set", $"model.hf_model_path={model}");
            Assert.Equal(Rows(Path.Combine(root, "random")), Rows(Path.Combine(root, "loaded")));
        }
        finally
        {
            if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
        }
    }

    [Theory]
    [InlineData("lora")]
    [InlineData("full")]
    public void Tied_embeddings_train_on_two_ranks_like_on_one(string trainable)
    {
        // The debug dimensions with tie_word_embeddings (as Llama-3.2-1B has): a config without a flavor takes them
        // from config.json. At 2 ranks the one matrix is both the vocabulary-parallel embedding and the head.
        string root = TempRoot();
        try
        {
            string model = Path.Combine(root, "model");
            Directory.CreateDirectory(model);
            var tokenizer = new Bflora.Data.ByteTokenizer();
            var args = Flavors.Get("debug") with { VocabSize = tokenizer.VocabSize, TieEmbeddings = true };
            Bflora.Checkpoints.HfConfig.Write(Path.Combine(model, Bflora.Checkpoints.HfConfig.FileName), args, tokenizer.BosId, tokenizer.EosId);
            string toml = Path.Combine(root, "tied.toml");
            File.WriteAllLines(toml, File.ReadAllLines(RepoPaths.Of("configs", "debug.toml"))
                .Where(l => !l.StartsWith("flavor"))
                .Select(l => l == "[model]" ? $"[model]\nhf_model_path = \"{model}\"" : l));
            // Full training: the one matrix gets its gradient from the head and from the lookup, summed before it is reduced.
            string[] run = { "train", "--config", toml, "--steps", "4", "--set", "training.log_freq=1", "--set",
                $"training.lr={(trainable == "full" ? "1e-3" : "1e-2")}", "--set", $"training.trainable={trainable}" };
            var (two, _) = MpiRunner.Bflora(2, run.Concat(new[] { "--set", "parallelism.fsdp_degree=2", "--out", Path.Combine(root, "w2") }).ToArray(), Timeout);
            Assert.True(two.ExitCode == 0, $"{two.Stdout}\n{two.Stderr}");
            var one = CliRunner.Run(run.Concat(new[] { "--set", "training.gradient_accumulation_steps=2", "--out", Path.Combine(root, "w1") }).ToArray(), Timeout);
            Assert.True(one.ExitCode == 0, one.Stderr);
            // The tie came through config.json: one vocabulary matrix in the count, the LoRA adapters on top.
            var counts = Regex.Match(one.Stdout, @"Total params: ([\d,]+) \| Trainable \((?:LoRA|full)\): ([\d,]+)");
            Assert.True(counts.Success, one.Stdout);
            long Number(int g) => long.Parse(counts.Groups[g].Value.Replace(",", ""));
            Assert.Equal(args.TotalParams + (trainable == "full" ? 0 : Number(2)), Number(1));
            var (w1, w2) = (Rows(Path.Combine(root, "w1")), Rows(Path.Combine(root, "w2")));
            Assert.Equal(4, w2.Count);
            AssertClose(w1, w2);
        }
        finally
        {
            if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
        }
    }

    private static CliResult TrainTwoRanks(string output, params string[] extra)
    {
        var (result, _) = MpiRunner.Bflora(2,
            Common.Concat(new[] { "--set", "parallelism.fsdp_degree=2", "--out", output }).Concat(extra).ToArray(), Timeout);
        Assert.True(result.ExitCode == 0, $"{result.Stdout}\n{result.Stderr}");
        return result;
    }

    private static string TempRoot() => Path.Combine(Path.GetTempPath(), $"bflora-fsdp-{Guid.NewGuid():N}");

    private static long ParamsPerRank(string stdout)
    {
        var match = Regex.Match(stdout, @"Params per rank: (\d+) bytes");
        Assert.True(match.Success, stdout);
        return long.Parse(match.Groups[1].Value);
    }

    private static List<(double Loss, double Norm)> Rows(string output) => File.ReadAllLines(Path.Combine(output, "metrics.jsonl"))
        .Select(line => JsonDocument.Parse(line).RootElement)
        .Select(e => (e.GetProperty("loss").GetDouble(), e.GetProperty("grad_norm").GetDouble()))
        .ToList();
}
