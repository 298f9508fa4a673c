using Bflora.Data;
using Xunit;

namespace Bflora.Tests.Data;

public sealed class DataLocatorTests
{
    [Fact]
    public void LocalPathsAreUsedAsTheyAre()
    {
        Assert.Equal(RepoPaths.Corpus, DataLocator.Resolve(RepoPaths.Corpus));
    }

    [Fact]
    public void HubIdIsFoundInTheCacheSnapshotThatRefsMainNames()
    {
        using var dir = new TempDir();
        string repo = Path.Combine(dir.Path, "hub", "datasets--org--set");
        dir.Write("hub/datasets--org--set/snapshots/aaa/train.jsonl", "{\"text\":\"a\"}\n");
        dir.Write("hub/datasets--org--set/snapshots/zzz/train.jsonl", "{\"text\":\"z\"}\n");
        var environment = new Dictionary<string, string?> { ["HF_HOME"] = dir.Path };
        Assert.Equal(Path.Combine(repo, "snapshots", "zzz"), DataLocator.Resolve("org/set", environment));
        dir.Write("hub/datasets--org--set/refs/main", "aaa\n");
        Assert.Equal(Path.Combine(repo, "snapshots", "aaa"), DataLocator.Resolve("org/set", environment));
    }

    [Fact]
    public void MissingHubIdSaysWhereItLookedAndHowToDownload()
    {
        using var dir = new TempDir();
        var environment = new Dictionary<string, string?> { ["HF_HUB_CACHE"] = dir.Path };
        var error = Assert.Throws<FileNotFoundException>(() => DataLocator.Resolve("Cheng98/fineweb-edu-1.25B", environment));
        Assert.Contains(Path.Combine(dir.Path, "datasets--Cheng98--fineweb-edu-1.25B", "snapshots"), error.Message);
        Assert.Contains("huggingface-cli download", error.Message);
        Assert.Throws<FileNotFoundException>(() => DataLocator.Resolve("no/such/local/path", environment));
    }
}
