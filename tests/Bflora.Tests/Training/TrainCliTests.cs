using System.Diagnostics;
using System.Text.Json.Nodes;
using Bflora.Checkpoints;
using Bflora.Lora;
using Bflora.Tests.Checkpoints;
using Bflora.Tests.Cli;
using Bflora.Training;
using Xunit;

namespace Bflora.Tests.Training;

public class TrainCliTests
{
    private static readonly string Debug = RepoPaths.Of("configs", "debug.toml");

    [Fact]
    public void Train_writes_metrics_plot_and_checkpoints_then_eval_and_export_use_the_adapter()
    {
        using var dir = new TempFolder();
        string output = Path.Combine(dir.Path, "run");
        var r = CliRunner.Run(["train", "--config", Debug, "--steps", "4", "--out", output,
            "--set", "training.log_freq=2", "--set", "training.save_freq=3", "--set", "training.seq_len=32",
            // A rate that moves the adapter well past bf16 rounding in four steps, for the merged-model check below.
            "--set", "training.lr=2e-2", "--set", "training.warmup_steps=1"]);
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Matches(@"Step 2/4 \| Loss: \d\.\d{4} \| LR: \d\.\d\de-\d\d \| Grad norm: \d+\.\d{3} \| Tokens/s: \d+ \| Elapsed: \d+\.\d\d", r.Stdout);
        var rows = File.ReadAllLines(Path.Combine(output, "metrics.jsonl")).Select(l => JsonNode.Parse(l)!).ToList();
        Assert.Equal(new long[] { 2, 4 }, rows.Select(row => row["step"]!.GetValue<long>()));
        Assert.True(new FileInfo(Path.Combine(output, "loss.png")).Length > 1000);
        Assert.Equal(new[] { "step-3", "step-4" },
            Directory.GetDirectories(Path.Combine(output, "checkpoints")).Select(Path.GetFileName).Order());

        string adapter = Path.Combine(output, "checkpoints", "step-4");
        var eval = CliRunner.Run(["eval", "--config", Debug, "--num-samples", "4", "--adapter", adapter, "--bitflip",
            "--json", Path.Combine(dir.Path, "eval.json")]);
        Assert.True(eval.ExitCode == 0, eval.Stderr);
        Assert.Contains("LoRA r=4", eval.Stdout);
        Assert.Equal("bitflip", JsonNode.Parse(File.ReadAllText(Path.Combine(dir.Path, "eval.json")))!["mode"]!.GetValue<string>());

        string peft = Path.Combine(dir.Path, "peft"), merged = Path.Combine(dir.Path, "merged");
        Assert.Equal(0, CliRunner.Run(["export", "--adapter", adapter, "--out", peft]).ExitCode);
        Assert.Equal(File.ReadAllBytes(Path.Combine(adapter, PeftAdapter.WeightsFile)),
            File.ReadAllBytes(Path.Combine(peft, PeftAdapter.WeightsFile)));
        var m = CliRunner.Run(["export", "--adapter", adapter, "--out", merged, "--merged", "--config", Debug]);
        Assert.True(m.ExitCode == 0, m.Stderr);
        Assert.Contains("model.layers.0.self_attn.q_proj.weight", HfCheckpoint.Open(merged).Tensors.Keys);

        // The merged model is the adapter's model: clean eval of one equals clean eval of the other, up to the bf16
        // rounding of W + s·B·A, and both differ from the base alone.
        double Loss(string name, params string[] extra)
        {
            string json = Path.Combine(dir.Path, $"{name}.json");
            var run = CliRunner.Run(["eval", "--config", Debug, "--num-samples", "4", "--json", json, .. extra]);
            Assert.True(run.ExitCode == 0, run.Stderr);
            return JsonNode.Parse(File.ReadAllText(json))!["loss"]!.GetValue<double>();
        }
        double withAdapter = Loss("adapter", "--adapter", adapter);
        double mergedLoss = Loss("merged", "--set", $"model.hf_model_path=\"{merged}\"", "--set", "model.init=\"pretrained\"");
        double baseLoss = Loss("base");
        Assert.True(Math.Abs(mergedLoss - withAdapter) <= 1e-3 * withAdapter, $"merged {mergedLoss} vs adapter {withAdapter}");
        Assert.True(Math.Abs(baseLoss - withAdapter) > 10 * Math.Abs(mergedLoss - withAdapter),
            $"base {baseLoss}, adapter {withAdapter}, merged {mergedLoss}");
    }

    [Fact]
    public void A_second_run_into_a_folder_that_a_run_is_writing_is_refused_and_the_lock_goes_with_the_run()
    {
        using var dir = new TempFolder();
        string output = Path.Combine(dir.Path, "run"), lockFile = Path.Combine(output, OutputLock.FileName);
        using var first = Process.Start(CliRunner.StartInfo(["train", "--config", Debug, "--steps", "100000", "--out", output,
            "--set", "training.save_freq=100000"]))!;
        try
        {
            var clock = Stopwatch.StartNew();
            while (!File.Exists(Path.Combine(output, "metrics.jsonl")) && !first.HasExited && clock.Elapsed < TimeSpan.FromSeconds(120))
                Thread.Sleep(20);
            Assert.False(first.HasExited, "the first run ended early");
            foreach (string[] extra in new[] { Array.Empty<string>(), ["--resume"] })
            {
                var second = CliRunner.Run(["train", "--config", Debug, "--steps", "2", "--out", output, .. extra]);
                Assert.Equal(2, second.ExitCode);
                Assert.Equal($"error: another bflora train is writing to {output} (it holds {lockFile}): let it finish, " +
                             "stop it, or train into another --out", Assert.Single(second.StderrLines));
            }
            Assert.False(first.HasExited, "the refused runs disturbed the first");
        }
        finally
        {
            first.Kill(entireProcessTree: true);
            first.WaitForExit();
        }
        // A killed run leaves its lock file but not its lock: the next run takes it, and removes the file when done.
        Assert.True(File.Exists(lockFile));
        var next = CliRunner.Run(["train", "--config", Debug, "--steps", "2", "--out", output]);
        Assert.True(next.ExitCode == 0, next.Stderr);
        Assert.False(File.Exists(lockFile));
    }

    [Theory]
    [InlineData("data/run")]
    [InlineData("data")]
    [InlineData("data/..run")]
    public void An_output_folder_inside_the_data_folder_is_refused_before_anything_is_written(string outFolder)
    {
        using var dir = new TempFolder();
        string data = Path.Combine(dir.Path, "data"), output = Path.Combine(dir.Path, outFolder);
        Directory.CreateDirectory(data);
        File.WriteAllText(Path.Combine(data, "doc.txt"), string.Concat(Enumerable.Repeat("It is a truth universally acknowledged. ", 40)));
        var r = CliRunner.Run(["train", "--config", Debug, "--steps", "1", "--out", output, "--set", $"data.path=\"{data}\""]);
        Assert.Equal(2, r.ExitCode);
        Assert.Equal($"error: the output folder {output} is inside the data folder {data}, whose files are all read as data: " +
                     "train into another --out", Assert.Single(r.StderrLines));
        Assert.Equal(["doc.txt"], Directory.GetFileSystemEntries(data).Select(Path.GetFileName));
        // A sibling whose name begins like the data folder's is outside it.
        var sibling = CliRunner.Run(["train", "--config", Debug, "--steps", "1", "--out", data + "..x", "--set", $"data.path=\"{data}\"",
            "--set", "training.seq_len=16"]);
        Assert.True(sibling.ExitCode == 0, sibling.Stderr);
    }

    [Fact]
    public void An_unwritable_output_folder_is_one_error_line_and_exit_2()
    {
        using var dir = new TempFolder();
        string blocker = Path.Combine(dir.Path, "file");
        File.WriteAllText(blocker, "not a folder");
        var r = CliRunner.Run(["train", "--config", Debug, "--steps", "2", "--out", Path.Combine(blocker, "run")]);
        Assert.Equal(2, r.ExitCode);
        var line = Assert.Single(r.StderrLines);
        Assert.StartsWith("error: cannot write to the output folder", line);
    }

    [Fact]
    public void A_full_training_checkpoint_given_as_an_adapter_says_how_to_use_it_and_that_works()
    {
        using var dir = new TempFolder();
        string output = Path.Combine(dir.Path, "run");
        var r = CliRunner.Run(["train", "--config", Debug, "--steps", "2", "--out", output, "--set", "training.seq_len=32",
            "--set", "training.trainable=\"full\""]);
        Assert.True(r.ExitCode == 0, r.Stderr);
        string model = Path.Combine(output, "checkpoints", "step-2");
        var asAdapter = CliRunner.Run(["eval", "--config", Debug, "--num-samples", "2", "--adapter", model]);
        Assert.Equal(2, asAdapter.ExitCode);
        string line = Assert.Single(asAdapter.StderrLines);
        Assert.Contains("a whole model", line);
        Assert.Contains($"hf_model_path = \"{model}\"", line);
        var asModel = CliRunner.Run(["eval", "--config", Debug, "--num-samples", "2",
            "--set", $"model.hf_model_path=\"{model}\"", "--set", "model.init=\"pretrained\""]);
        Assert.True(asModel.ExitCode == 0, asModel.Stderr);
    }

    [Fact]
    public void Export_of_a_folder_without_an_adapter_is_an_input_error()
    {
        using var dir = new TempFolder();
        var r = CliRunner.Run(["export", "--adapter", dir.Path, "--out", Path.Combine(dir.Path, "out")]);
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("not a PEFT adapter folder", Assert.Single(r.StderrLines));
    }
}
