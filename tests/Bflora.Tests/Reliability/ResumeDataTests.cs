using System.Text.Json.Nodes;
using Bflora.Tests.Checkpoints;
using Bflora.Tests.Cli;
using Xunit;

namespace Bflora.Tests.Reliability;

/// <summary>
/// `--resume` when the data under the run has changed since its checkpoint: a moved copy goes on quietly, other files
/// or another window length go on with a warning, another tokenizer (whose ids the saved position counts) is refused.
/// </summary>
public class ResumeDataTests
{
    private static string[] Train(string output, string data, int steps, params string[] more) =>
        ["train", "--config", RepoPaths.Of("configs", "debug.toml"), "--steps", steps.ToString(), "--out", output,
         "--set", $"data.path=\"{data}\"", "--set", "training.seq_len=32", "--set", "training.save_freq=2", "--set", "training.log_freq=1", .. more];

    /// <summary>Two small documents cut from the bundled corpus, in a folder of their own.</summary>
    private static string SmallDataset(TempFolder dir, string name)
    {
        string folder = dir.File(name);
        Directory.CreateDirectory(folder);
        foreach (string book in new[] { "austen_emma.txt", "austen_persuasion.txt" })
            File.WriteAllText(Path.Combine(folder, book), File.ReadAllText(RepoPaths.Of("data", "corpus", book))[..20_000]);
        return folder;
    }

    private static void TrainTwoSteps(string output, string data, params string[] more)
    {
        var r = CliRunner.Run(Train(output, data, 2, more), CleanError.Timeout);
        Assert.True(r.ExitCode == 0, r.Stderr);
    }

    [Fact]
    public void The_same_files_moved_elsewhere_resume_without_a_warning()
    {
        using var dir = new TempFolder();
        string data = SmallDataset(dir, "data"), run = dir.File("run");
        TrainTwoSteps(run, data);
        Directory.Move(data, dir.File("moved"));
        var resumed = CliRunner.Run([.. Train(run, dir.File("moved"), 4), "--resume"], CleanError.Timeout);
        Assert.True(resumed.ExitCode == 0, resumed.Stderr);
        Assert.Contains("Resumed from", resumed.Stdout);
        Assert.DoesNotContain("warning", resumed.Stdout + resumed.Stderr);
    }

    [Fact]
    public void Other_files_or_another_window_length_resume_with_one_warning_naming_the_change()
    {
        using var dir = new TempFolder();
        string data = SmallDataset(dir, "data"), run = dir.File("run");
        TrainTwoSteps(run, data);
        long before = Directory.GetFiles(data).Sum(f => new FileInfo(f).Length);
        File.WriteAllText(Path.Combine(data, "added.txt"), "A document added after the checkpoint. ");
        long after = before + new FileInfo(Path.Combine(data, "added.txt")).Length;

        var resumed = CliRunner.Run([.. Train(run, data, 4, "--set", "training.seq_len=48"), "--resume"], CleanError.Timeout);
        Assert.True(resumed.ExitCode == 0, resumed.Stderr);
        string warning = Assert.Single(resumed.StdoutLines, l => l.StartsWith("warning:", StringComparison.Ordinal));
        Assert.Contains($"files: 2 of {before:N0} bytes → 3 of {after:N0} bytes", warning);
        Assert.Contains("seq_len: 32 → 48", warning);
        Assert.Contains("goes on from the saved position", warning);
        Assert.Contains("Step 4/4", resumed.Stdout);
    }

    [Fact]
    public void A_renamed_file_of_the_same_size_is_a_change()
    {
        using var dir = new TempFolder();
        string data = SmallDataset(dir, "data"), run = dir.File("run");
        TrainTwoSteps(run, data);
        File.Move(Path.Combine(data, "austen_emma.txt"), Path.Combine(data, "zz_emma.txt"));
        var resumed = CliRunner.Run([.. Train(run, data, 4), "--resume"], CleanError.Timeout);
        Assert.True(resumed.ExitCode == 0, resumed.Stderr);
        Assert.Contains("warning: the data differs from the checkpoint's (the files' names or sizes)", resumed.Stdout);
    }

    [Fact]
    public void Another_tokenizer_is_refused_before_anything_is_touched()
    {
        using var dir = new TempFolder();
        string data = SmallDataset(dir, "data"), run = dir.File("run");
        TrainTwoSteps(run, data, "--set", "model.tokenizer=\"llama3\"");
        string metrics = File.ReadAllText(Path.Combine(run, "metrics.jsonl"));
        var resumed = CliRunner.Run([.. Train(run, data, 4), "--resume"], CleanError.Timeout);
        CleanError.Check(resumed, "llama3 (128256 ids) tokens", "the config's tokenizer is byte");
        Assert.Equal(metrics, File.ReadAllText(Path.Combine(run, "metrics.jsonl")));
        Assert.Equal(new[] { "step-2" }, Directory.GetDirectories(Path.Combine(run, "checkpoints")).Select(Path.GetFileName));
    }

    [Fact]
    public void A_saved_position_holding_ids_outside_the_vocabulary_is_one_error_line()
    {
        using var dir = new TempFolder();
        string data = SmallDataset(dir, "data"), run = dir.File("run");
        TrainTwoSteps(run, data);
        // What a state.json written before the data identity was kept, under another tokenizer, could hold.
        string stateJson = Path.Combine(run, "checkpoints", "step-2", "trainer_state", "state.json");
        var state = JsonNode.Parse(File.ReadAllText(stateJson))!.AsObject();
        state.Remove("data");
        state["data_cursor"]!["Carry"] = new JsonArray(17, 128000);
        File.WriteAllText(stateJson, state.ToJsonString());
        var resumed = CliRunner.Run([.. Train(run, data, 4), "--resume"], CleanError.Timeout);
        CleanError.Check(resumed, "data_cursor holds token id 128000", "outside the tokenizer's");
    }
}
