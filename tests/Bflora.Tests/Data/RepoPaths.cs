namespace Bflora.Tests.Data;

/// <summary>Files the tests read live in the repository (not in ../shared), found by walking up to Bflora.slnx.</summary>
internal static class RepoPaths
{
    public static readonly string Root = FindRoot();

    public static string Corpus => Path.Combine(Root, "data", "corpus");

    public static string Llama3TokenizerJson => Path.Combine(Root, "data", "tokenizer", "llama3", "tokenizer.json");

    public static string Golden(string name) => Path.Combine(Root, "data", "tokenizer", "golden", name);

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Bflora.slnx")))
                return dir.FullName;
        }
        throw new DirectoryNotFoundException($"no Bflora.slnx above {AppContext.BaseDirectory}");
    }
}
