namespace Bflora.Data;

/// <summary>
/// Turns a config's <c>[data] path</c> into something on disk (DESIGN "Finding models and data"): an existing file or
/// folder is used as it is; otherwise an "org/name" hub id is looked up in the local Hugging Face cache, since
/// nothing is downloaded at run time.
/// </summary>
public static class DataLocator
{
    public static string Resolve(string path, IReadOnlyDictionary<string, string?>? environment = null)
    {
        if (File.Exists(path) || Directory.Exists(path))
            return path;
        string hub = HubCacheFolder(environment ?? ReadEnvironment());
        var parts = path.Split('/');
        if (parts.Length != 2 || parts.Any(p => p.Length == 0 || p == "." || p == ".."))
            throw new FileNotFoundException($"data path not found: {path} (not a local file or folder, nor an org/name hub id)", path);

        string repo = Path.Combine(hub, $"datasets--{parts[0]}--{parts[1]}");
        string snapshots = Path.Combine(repo, "snapshots");
        string? snapshot = PreferredSnapshot(repo, snapshots);
        return snapshot ?? throw new FileNotFoundException(
            $"data path {path} is neither local nor in the Hugging Face cache (looked in {snapshots}); download it first, " +
            $"e.g. `huggingface-cli download --repo-type dataset {path}`, or set [data] path to a local folder", path);
    }

    /// <summary>The snapshot refs/main names, else the last one in ordinal order; null when there is none.</summary>
    private static string? PreferredSnapshot(string repo, string snapshots)
    {
        if (!Directory.Exists(snapshots))
            return null;
        string mainRef = Path.Combine(repo, "refs", "main");
        if (File.Exists(mainRef))
        {
            string pinned = Path.Combine(snapshots, File.ReadAllText(mainRef).Trim());
            if (Directory.Exists(pinned))
                return pinned;
        }
        return Directory.GetDirectories(snapshots).OrderBy(d => d, StringComparer.Ordinal).LastOrDefault();
    }

    private static string HubCacheFolder(IReadOnlyDictionary<string, string?> environment)
    {
        if (environment.GetValueOrDefault("HF_HUB_CACHE") is { Length: > 0 } hubCache)
            return hubCache;
        if (environment.GetValueOrDefault("HF_HOME") is { Length: > 0 } home)
            return Path.Combine(home, "hub");
        string user = environment.GetValueOrDefault("HOME") ?? Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        return Path.Combine(user, ".cache", "huggingface", "hub");
    }

    private static Dictionary<string, string?> ReadEnvironment() =>
        new[] { "HF_HUB_CACHE", "HF_HOME", "HOME" }.ToDictionary(k => k, Environment.GetEnvironmentVariable);
}
