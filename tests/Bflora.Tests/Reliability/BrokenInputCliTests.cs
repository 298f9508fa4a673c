using System.Buffers.Binary;
using Bflora.Tests.Checkpoints;
using Bflora.Tests.Cli;
using Xunit;
using static TorchSharp.torch;

namespace Bflora.Tests.Reliability;

/// <summary>
/// A model folder or dataset broken in one way, through the real `bflora eval` / `bflora train`: one error line naming
/// the cause, exit 2, and no --json file or checkpoint written.
/// </summary>
public class BrokenInputCliTests(BrokenHfFolder model) : IClassFixture<BrokenHfFolder>
{
    private const string Q0 = "model.layers.0.self_attn.q_proj.weight";
    private const string Down1 = "model.layers.1.mlp.down_proj.weight";
    private static readonly string Debug = RepoPaths.Of("configs", "debug.toml");

    private static string EvalFails(string modelPath, params string[] mentions)
    {
        using var dir = new TempFolder();
        string json = dir.File("eval.json");
        var r = CliRunner.Run(["eval", "--config", Debug, "--num-samples", "2", "--json", json,
            "--set", "model.init=\"pretrained\"", "--set", $"model.hf_model_path=\"{modelPath}\""], CleanError.Timeout,
            environment: new Dictionary<string, string> { ["HF_HUB_CACHE"] = dir.File("hub") });
        string line = CleanError.Check(r, mentions);
        Assert.False(File.Exists(json));
        return line;
    }

    [Fact]
    public void The_valid_folder_evaluates()
    {
        var r = CliRunner.Run(["eval", "--config", Debug, "--num-samples", "2",
            "--set", "model.init=\"pretrained\"", "--set", $"model.hf_model_path=\"{model.Valid}\""], CleanError.Timeout);
        Assert.True(r.ExitCode == 0, r.Stderr);
    }

    [Fact]
    public void A_hub_id_not_in_the_cache_says_where_it_looked_and_how_to_download() =>
        EvalFails("nobody-here/no-such-model", "not in the Hugging Face cache", "huggingface-cli download");

    [Fact]
    public void A_missing_config_json()
    {
        string folder = model.Copy();
        File.Delete(Path.Combine(folder, "config.json"));
        EvalFails(folder, "no config.json");
    }

    [Fact]
    public void A_config_json_that_does_not_match_the_flavor()
    {
        string folder = model.Copy();
        BrokenHfFolder.EditConfig(folder, c => c["num_hidden_layers"] = 3);
        EvalFails(folder, "does not match flavor 'debug'", "num_hidden_layers 2 (flavor) vs 3");
    }

    [Fact]
    public void A_config_json_with_sizes_no_model_can_have()
    {
        string folder = model.Copy();
        BrokenHfFolder.EditConfig(folder, c => c["num_key_value_heads"] = 0);
        EvalFails(folder, "config.json", "'num_key_value_heads' is 0");
    }

    [Fact]
    public void A_missing_tensor()
    {
        string folder = model.Copy();
        BrokenHfFolder.EditTensors(folder, t => t.Remove(Down1));
        EvalFails(folder, Down1);
    }

    [Fact]
    public void A_tensor_of_the_wrong_shape()
    {
        string folder = model.Copy();
        BrokenHfFolder.EditTensors(folder, t => t[Q0] = zeros(8, 64, dtype: ScalarType.BFloat16));
        EvalFails(folder, Q0, "shape [8, 64]", "expects [64, 64]");
    }

    [Fact]
    public void A_tensor_of_a_non_float_dtype()
    {
        string folder = model.Copy();
        BrokenHfFolder.EditHeader(BrokenHfFolder.Weights(folder), h => h[Q0]!["dtype"] = "I16");
        EvalFails(folder, Q0, "dtype I16 is not supported");
    }

    [Fact]
    public void A_truncated_safetensors_file()
    {
        string folder = model.Copy();
        string file = BrokenHfFolder.Weights(folder);
        using (var stream = File.OpenWrite(file)) stream.SetLength(stream.Length / 2);
        EvalFails(folder, "model.safetensors", "past the end");
    }

    [Fact]
    public void Header_offsets_past_the_end()
    {
        string folder = model.Copy();
        BrokenHfFolder.EditHeader(BrokenHfFolder.Weights(folder), h =>
        {
            var offsets = h[Q0]!["data_offsets"]!.AsArray();
            offsets[1] = offsets[1]!.GetValue<long>() + 1_000_000_000;
        });
        EvalFails(folder, Q0, "past the end");
    }

    [Fact]
    public void A_header_larger_than_the_file()
    {
        string folder = model.Copy();
        string file = BrokenHfFolder.Weights(folder);
        byte[] bytes = File.ReadAllBytes(file);
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)bytes.Length * 3);
        File.WriteAllBytes(file, bytes);
        EvalFails(folder, "header length", "larger than");
    }

    [Fact]
    public void A_json_output_that_is_a_folder()
    {
        using var dir = new TempFolder();
        var r = CliRunner.Run(["eval", "--config", Debug, "--num-samples", "2", "--json", dir.Path], CleanError.Timeout);
        CleanError.Check(r, $"--json {dir.Path} is a folder, not a file");
        Assert.DoesNotContain("EVAL", r.Stdout);   // refused before the evaluation, not after it
        Assert.Empty(Directory.GetFileSystemEntries(dir.Path));
    }

    [Fact]
    public void A_json_output_under_a_file_is_refused_before_the_bench()
    {
        using var dir = new TempFolder();
        string file = dir.File("plain");
        File.WriteAllText(file, "");
        var r = CliRunner.Run(["bench", "--quick", "--json", Path.Combine(file, "sub", "bench.json")], CleanError.Timeout);
        CleanError.Check(r, "cannot write --json", $"{file} is a file");
        Assert.Empty(r.Stdout.Trim());
        Assert.Equal([file], Directory.GetFileSystemEntries(dir.Path));
    }

    [Fact]
    public void A_dataset_hub_id_not_in_the_cache_says_where_it_looked()
    {
        using var dir = new TempFolder();
        var r = CliRunner.Run(["eval", "--config", Debug, "--num-samples", "2", "--set", "data.path=\"nobody-here/no-such-data\""],
            CleanError.Timeout, environment: new Dictionary<string, string> { ["HF_HUB_CACHE"] = dir.File("hub") });
        CleanError.Check(r, "nobody-here/no-such-data", "Hugging Face cache", "huggingface-cli download");
    }

    [Theory]
    [InlineData("empty.jsonl", "", "has no documents")]
    [InlineData("short.txt", "just a few words", "fewer than seq_len + 1")]
    [InlineData("fields.jsonl", "{\"body\": \"some text\"}\n", "no field 'text'")]
    [InlineData("table.csv", "text\nhello\n", "not supported")]
    public void A_dataset_that_cannot_make_a_window_stops_training_before_any_checkpoint(string file, string content, string cause)
    {
        using var dir = new TempFolder();
        File.WriteAllText(dir.File(file), content);
        string output = dir.File("run");
        var r = CliRunner.Run(["train", "--config", Debug, "--steps", "1", "--out", output,
            "--set", $"data.path=\"{dir.File(file)}\""], CleanError.Timeout);
        CleanError.Check(r, cause, file);
        Assert.False(Directory.Exists(Path.Combine(output, "checkpoints")));
    }
}
