using System.Text.Json.Nodes;
using Bflora.Checkpoints;
using Bflora.Lora;
using Bflora.Tests.Checkpoints;
using Bflora.Training;
using Xunit;
using static TorchSharp.torch;

namespace Bflora.Tests.Training;

public class CheckpointTests
{
    private static readonly string[] Modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

    [Fact]
    public void Adapter_has_peft_keys_and_config_and_round_trips()
    {
        using var dir = new TempFolder();
        using var session = TrainingSession.Open(TrainingKit.Config("lora", steps: 2));
        var schedule = new LrSchedule(1e-2, 0, 2);
        session.Step(schedule);
        session.Step(schedule);
        string folder = Checkpointer.Save(dir.Path, session);
        Assert.Equal("step-2", Path.GetFileName(folder));

        var file = SafetensorsFile.Open(Path.Combine(folder, PeftAdapter.WeightsFile));
        var expected = Enumerable.Range(0, 2).SelectMany(i => Modules.SelectMany(m => new[] { "A", "B" }.Select(ab =>
            $"base_model.model.model.layers.{i}.{(Modules.Take(4).Contains(m) ? "self_attn" : "mlp")}.{m}.lora_{ab}.weight")));
        Assert.Equal(expected.Order(), file.Tensors.Keys.Order());
        Assert.Equal(new long[] { 4, 64 }, file.Tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"].Shape);
        Assert.Equal(new long[] { 64, 4 }, file.Tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"].Shape);

        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, PeftAdapter.ConfigFile)))!;
        Assert.Equal("LORA", config["peft_type"]!.GetValue<string>());
        Assert.Equal("CAUSAL_LM", config["task_type"]!.GetValue<string>());
        Assert.Equal(4, config["r"]!.GetValue<int>());
        Assert.Equal(8.0, config["lora_alpha"]!.GetValue<double>());
        Assert.Equal(0.0, config["lora_dropout"]!.GetValue<double>());
        Assert.Equal("none", config["bias"]!.GetValue<string>());
        Assert.False(config["fan_in_fan_out"]!.GetValue<bool>());
        Assert.True(config["inference_mode"]!.GetValue<bool>());
        Assert.Equal(Modules.Order(), config["target_modules"]!.AsArray().Select(n => n!.GetValue<string>()).Order());

        // q's lora_B is stored in HF row order: the file's rows are the torchtitan rows permuted back.
        var wq = session.Converted.Layers.Single(l => l.Name == "layers.0.attention.wq").Layer;
        using var storedB = file.Load("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight");
        using var hfRows = LlamaKeyMap.TitanToHfRows(wq.LoraB!.detach(), session.Args.NHeads);
        Assert.True(TrainingKit.Same(storedB, hfRows));
        Assert.False(TrainingKit.Same(storedB, wq.LoraB!.detach()));

        using var other = TrainingSession.Open(TrainingKit.Config("lora", steps: 2, overrides: ["training.seed=5"]));
        PeftAdapter.Load(folder, other.Converted, other.Args);
        foreach (var ((name, a), (_, b)) in session.Converted.Layers.Zip(other.Converted.Layers))
        {
            Assert.True(TrainingKit.Same(a.LoraA!, b.LoraA!), name);
            Assert.True(TrainingKit.Same(a.LoraB!, b.LoraB!), name);
        }
        Assert.Empty(Directory.GetDirectories(Checkpointer.Root(dir.Path), ".*"));
    }

    /// <summary>A trained two-step adapter, saved, and a fresh session (another seed) to load it into.</summary>
    private static (TrainingSession Trained, string Folder) TrainedAdapter(string root)
    {
        var session = TrainingSession.Open(TrainingKit.Config("lora", steps: 2));
        var schedule = new LrSchedule(1e-2, 0, 2);
        session.Step(schedule);
        session.Step(schedule);
        return (session, Checkpointer.Save(root, session));
    }

    /// <summary>Rewrites an adapter folder: its config through <paramref name="config"/>, its tensors through <paramref name="keep"/>.</summary>
    private static void Rewrite(string folder, Action<JsonObject> config, Func<string, bool>? keep = null,
        Dictionary<string, Tensor>? add = null)
    {
        string configPath = Path.Combine(folder, PeftAdapter.ConfigFile), weightsPath = Path.Combine(folder, PeftAdapter.WeightsFile);
        var json = JsonNode.Parse(File.ReadAllText(configPath))!.AsObject();
        config(json);
        File.WriteAllText(configPath, json.ToJsonString());
        var file = SafetensorsFile.Open(weightsPath);
        var tensors = file.Tensors.Keys.Where(keep ?? (_ => true)).ToDictionary(k => k, k => file.Load(k));
        foreach (var (k, t) in add ?? []) tensors[k] = t;
        SafetensorsWriter.Write(weightsPath, tensors);
        foreach (var t in tensors.Values) t.Dispose();
    }

    [Fact]
    public void A_peft_adapter_of_some_module_kinds_leaves_the_other_layers_unchanged()
    {
        using var dir = new TempFolder();
        var (trained, folder) = TrainedAdapter(dir.Path);
        using var _ = trained;
        Rewrite(folder, c => c["target_modules"] = new JsonArray("q_proj", "v_proj"),
            keep: k => k.Contains(".q_proj.") || k.Contains(".v_proj."));
        using var other = TrainingSession.Open(TrainingKit.Config("lora", steps: 2, overrides: ["training.seed=5"]));
        PeftAdapter.Load(folder, other.Converted, other.Args);
        foreach (var ((name, a), (_, b)) in trained.Converted.Layers.Zip(other.Converted.Layers))
        {
            if (name.EndsWith(".wq") || name.EndsWith(".wv"))
            {
                Assert.True(TrainingKit.Same(a.LoraB!, b.LoraB!), name);
                Assert.True(TrainingKit.Same(a.LoraA!, b.LoraA!), name);
            }
            else
            {
                Assert.False(TrainingKit.Same(a.LoraB!, b.LoraB!), $"{name}: the trained B is not zero, so this tells them apart");
                Assert.Equal(0f, b.LoraB!.abs().max().to(ScalarType.Float32).item<float>());
            }
        }

        // A layer of a kind the adapter names, missing: an adapter of another model.
        Rewrite(folder, _ => { }, keep: k => !k.Contains("layers.1.self_attn.q_proj"));
        var e = Assert.Throws<BfloraInputException>(() => PeftAdapter.Load(folder, other.Converted, other.Args));
        Assert.EndsWith("the adapter has no weights for 'layers.1.attention.wq'", e.Message);
    }

    [Fact]
    public void An_all_linear_adapter_loads_like_a_listed_one()
    {
        using var dir = new TempFolder();
        var (trained, folder) = TrainedAdapter(dir.Path);
        using var _ = trained;
        Rewrite(folder, c => c["target_modules"] = "all-linear");
        using var other = TrainingSession.Open(TrainingKit.Config("lora", steps: 2, overrides: ["training.seed=5"]));
        PeftAdapter.Load(folder, other.Converted, other.Args);
        foreach (var ((name, a), (_, b)) in trained.Converted.Layers.Zip(other.Converted.Layers))
            Assert.True(TrainingKit.Same(a.LoraB!, b.LoraB!), name);
    }

    [Theory]
    [InlineData("use_dora", "true", "use_dora is on (DoRA); bflora applies only plain LoRA, W + (lora_alpha/r)·B·A")]
    [InlineData("use_rslora", "true", "use_rslora is on (rank-stabilised LoRA, scale α/√r)")]
    [InlineData("lora_bias", "true", "lora_bias is on (LoRA biases)")]
    [InlineData("rank_pattern", "{\"q_proj\": 8}", "rank_pattern is set: bflora takes one r and one lora_alpha for every layer")]
    [InlineData("alpha_pattern", "{\"q_proj\": 16}", "alpha_pattern is set")]
    [InlineData("layers_to_transform", "[0]", "layers_to_transform is set")]
    [InlineData("target_modules", "\".*proj\"", "a regex is not supported")]
    public void Peft_options_that_would_change_the_weights_are_refused(string key, string value, string message)
    {
        using var dir = new TempFolder();
        var (trained, folder) = TrainedAdapter(dir.Path);
        using var _ = trained;
        Rewrite(folder, c => c[key] = JsonNode.Parse(value));
        var e = Assert.Throws<BfloraInputException>(() => PeftAdapter.Load(folder, trained.Converted, trained.Args));
        Assert.Contains(message, e.Message);
        // The options as PEFT writes them when off load as before.
        Rewrite(folder, c => c[key] = key is "rank_pattern" or "alpha_pattern" ? new JsonObject() : key == "target_modules"
            ? new JsonArray(Modules.Select(m => (JsonNode)m!).ToArray()) : key == "layers_to_transform" ? null : false);
        PeftAdapter.Load(folder, trained.Converted, trained.Args);
    }

    [Fact]
    public void An_adapter_tensor_that_is_not_lora_a_or_b_is_refused_not_left_out()
    {
        using var dir = new TempFolder();
        var (trained, folder) = TrainedAdapter(dir.Path);
        using var _ = trained;
        const string magnitude = "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector";
        Rewrite(folder, _ => { }, add: new() { [magnitude] = ones(64, dtype: ScalarType.BFloat16) });
        var e = Assert.Throws<BfloraInputException>(() => PeftAdapter.Load(folder, trained.Converted, trained.Args));
        Assert.EndsWith($"'{magnitude}' is not a LoRA A or B weight (bflora applies plain LoRA only)", e.Message);
        Assert.Throws<BfloraInputException>(() => AdapterExport.Validate(folder));
    }

    [Fact]
    public void Resume_continues_bit_identically_and_appends_metrics()
    {
        using var straight = new TempFolder();
        using var resumed = new TempFolder();
        var quiet = new PlainProgress(TextWriter.Null);
        // warmup > steps: the schedule then does not depend on the total, which the resumed run changes.
        var six = TrainingKit.Config("lora", steps: 6, warmup: 10, overrides: ["training.save_freq=2"]);
        var three = TrainingKit.Config("lora", steps: 3, warmup: 10, overrides: ["training.save_freq=2"]);
        var a = TrainRun.Execute(six, new TrainOptions(straight.Path), quiet);
        TrainRun.Execute(three, new TrainOptions(resumed.Path), quiet);
        var b = TrainRun.Execute(six, new TrainOptions(resumed.Path, Resume: true), quiet);

        Assert.Equal(Enumerable.Range(1, 6).Select(i => (long)i), b.Rows.Select(r => r.Step));
        Assert.Equal(a.Rows.Select(r => r.Loss), b.Rows.Select(r => r.Loss));
        Assert.Equal(a.Rows.Select(r => r.GradNorm), b.Rows.Select(r => r.GradNorm));
        Assert.Equal(a.Rows.Select(r => r.Lr), b.Rows.Select(r => r.Lr));
        foreach (var line in File.ReadAllLines(Path.Combine(resumed.Path, MetricsLog.FileName)))
        {
            var row = JsonNode.Parse(line)!.AsObject();
            Assert.Equal(new[] { "grad_norm", "loss", "lr", "step", "tokens_per_s" }, row.Select(kv => kv.Key).Order());
        }
        Assert.Equal(new[] { "step-2", "step-3", "step-4", "step-6" },
            Directory.GetDirectories(Checkpointer.Root(resumed.Path)).Select(Path.GetFileName).Order());
        Assert.True(File.Exists(Path.Combine(resumed.Path, "loss.png")));
        Assert.Equal(File.ReadAllBytes(Path.Combine(straight.Path, "checkpoints", "step-6", PeftAdapter.WeightsFile)),
            File.ReadAllBytes(Path.Combine(resumed.Path, "checkpoints", "step-6", PeftAdapter.WeightsFile)));
    }

    [Fact]
    public void Resume_between_two_log_rows_logs_the_rows_a_straight_run_logs()
    {
        using var straight = new TempFolder();
        using var resumed = new TempFolder();
        var quiet = new PlainProgress(TextWriter.Null);
        string[] every2 = ["training.log_freq=2", "training.save_freq=10"];
        var a = TrainRun.Execute(TrainingKit.Config("lora", steps: 6, warmup: 10, overrides: every2), new TrainOptions(straight.Path), quiet);
        // Stops at step 3, after the row of step 2: step 3's loss waits in the checkpoint for the row of step 4.
        TrainRun.Execute(TrainingKit.Config("lora", steps: 3, warmup: 10, overrides: every2), new TrainOptions(resumed.Path), quiet);
        var b = TrainRun.Execute(TrainingKit.Config("lora", steps: 6, warmup: 10, overrides: every2),
            new TrainOptions(resumed.Path, Resume: true), quiet);
        Assert.Equal(new long[] { 2, 4, 6 }, b.Rows.Select(r => r.Step));
        Assert.Equal(a.Rows.Select(r => r.Loss), b.Rows.Select(r => r.Loss));
    }

    [Fact]
    public void Resume_without_a_checkpoint_is_an_input_error()
    {
        using var dir = new TempFolder();
        var e = Assert.Throws<BfloraInputException>(() =>
            TrainRun.Execute(TrainingKit.Config(steps: 2), new TrainOptions(dir.Path, Resume: true), new PlainProgress(TextWriter.Null)));
        Assert.Contains("no complete checkpoint", e.Message);
    }

    [Fact]
    public void Full_mode_checkpoint_is_an_hf_model_with_trainer_state()
    {
        using var dir = new TempFolder();
        var result = TrainRun.Execute(TrainingKit.Config("full", steps: 2, lr: 3e-3), new TrainOptions(dir.Path),
            new PlainProgress(TextWriter.Null));
        var checkpoint = HfCheckpoint.Open(result.LastCheckpoint);
        Assert.Contains("model.layers.1.mlp.down_proj.weight", checkpoint.Tensors.Keys);
        Assert.Contains("lm_head.weight", checkpoint.Tensors.Keys);
        Assert.True(File.Exists(Path.Combine(result.LastCheckpoint, "config.json")));
        var state = SafetensorsFile.Open(Path.Combine(result.LastCheckpoint, Checkpointer.StateFolder, Checkpointer.OptimizerFile));
        Assert.Equal(ScalarType.Float32, state.Tensors["tok_embeddings.weight/master"].Dtype);
    }
}
