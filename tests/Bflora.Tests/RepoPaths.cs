namespace Bflora.Tests;

/// <summary>Locates files of the repository from the test's output folder, so tests need nothing outside it.</summary>
public static class RepoPaths
{
    public static string Root { get; } = FindRoot();

    public static string Of(params string[] parts) => Path.Combine(new[] { Root }.Concat(parts).ToArray());

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Bflora.slnx"))) return dir.FullName;
        throw new InvalidOperationException("repository root (Bflora.slnx) not found above " + AppContext.BaseDirectory);
    }
}
