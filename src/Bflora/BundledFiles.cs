namespace Bflora;

/// <summary>Files that ship with bflora (the Llama-3 tokenizer, the demo corpus), found from the running binary.</summary>
public static class BundledFiles
{
    /// <summary>The bflora checkout holding <paramref name="relativePath"/>, searched upwards from the binary's folder.</summary>
    public static string Find(string relativePath)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, relativePath);
            if (File.Exists(candidate) || Directory.Exists(candidate)) return candidate;
        }
        throw new BfloraInputException($"bundled file '{relativePath}' not found above {AppContext.BaseDirectory}");
    }

    public static string Llama3Tokenizer => Find(Path.Combine("data", "tokenizer", "llama3", "tokenizer.json"));
}
