using Bflora.Checkpoints;
using Xunit;

namespace Bflora.Tests.Checkpoints;

public class HfHubTests
{
    private static string MakeSnapshot(string hfHome, string repoFolder, string commit, DateTime written)
    {
        string snapshot = Path.Combine(hfHome, "hub", repoFolder, "snapshots", commit);
        Directory.CreateDirectory(snapshot);
        File.WriteAllText(Path.Combine(snapshot, "config.json"), "{}");
        Directory.SetLastWriteTimeUtc(snapshot, written);
        return snapshot;
    }

    [Fact]
    public void LocalPathsAreUsedAsTheyAre()
    {
        using var home = new TempFolder();
        using var local = new TempFolder();
        string file = local.File("corpus.txt");
        File.WriteAllText(file, "text");
        Assert.Equal(local.Path, HfHub.ResolveModel(local.Path, home.Path));
        Assert.Equal(file, HfHub.ResolveDataset(file, home.Path));
    }

    [Fact]
    public void RefsMainWinsOverTheNewestSnapshot()
    {
        using var home = new TempFolder();
        string older = MakeSnapshot(home.Path, "models--meta-llama--Llama-3.1-8B", "aaa111", new DateTime(2024, 1, 1));
        MakeSnapshot(home.Path, "models--meta-llama--Llama-3.1-8B", "bbb222", new DateTime(2025, 1, 1));
        string refs = Path.Combine(home.Path, "hub", "models--meta-llama--Llama-3.1-8B", "refs");
        Directory.CreateDirectory(refs);
        File.WriteAllText(Path.Combine(refs, "main"), "aaa111\n");

        Assert.Equal(older, HfHub.ResolveModel("meta-llama/Llama-3.1-8B", home.Path));
    }

    [Fact]
    public void WithoutRefsTheNewestSnapshotIsUsed()
    {
        using var home = new TempFolder();
        MakeSnapshot(home.Path, "datasets--Cheng98--fineweb-edu-1.25B", "old", new DateTime(2024, 1, 1));
        string newer = MakeSnapshot(home.Path, "datasets--Cheng98--fineweb-edu-1.25B", "new", new DateTime(2025, 1, 1));

        Assert.Equal(newer, HfHub.ResolveDataset("Cheng98/fineweb-edu-1.25B", home.Path));
        Assert.Throws<FileNotFoundException>(() => HfHub.ResolveModel("Cheng98/fineweb-edu-1.25B", home.Path));
    }

    [Fact]
    public void MissingIdSaysWhereItLookedAndHowToDownload()
    {
        using var home = new TempFolder();
        var e = Assert.Throws<FileNotFoundException>(() => HfHub.ResolveModel("org/missing-model", home.Path));
        Assert.Contains(Path.Combine(home.Path, "hub", "models--org--missing-model", "snapshots"), e.Message);
        Assert.Contains("huggingface-cli download org/missing-model", e.Message);
        Assert.DoesNotContain('\n', e.Message);

        var d = Assert.Throws<FileNotFoundException>(() => HfHub.ResolveDataset("org/data", home.Path));
        Assert.Contains("huggingface-cli download org/data --repo-type dataset", d.Message);

        var p = Assert.Throws<FileNotFoundException>(() => HfHub.ResolveModel("/no/such/dir/model", home.Path));
        Assert.Contains("neither an existing file or folder nor a hub id", p.Message);
    }
}
