using System.Text.RegularExpressions;

namespace Bflora.Checkpoints;

/// <summary>
/// Finds models and data sets that are already on this machine: a local path as is, or a hub id in the local
/// Hugging Face cache. Nothing is ever downloaded at run time.
/// </summary>
public static partial class HfHub
{
    [GeneratedRegex(@"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")]
    private static partial Regex HubId();

    /// <summary>Resolves a model path or hub id to a local folder or file.</summary>
    /// <param name="hfHome">Stands in for <c>$HF_HOME</c>; null reads the environment.</param>
    public static string ResolveModel(string pathOrId, string? hfHome = null) => Resolve(pathOrId, "models", hfHome);

    /// <summary>Resolves a data set path or hub id to a local folder or file.</summary>
    /// <param name="hfHome">Stands in for <c>$HF_HOME</c>; null reads the environment.</param>
    public static string ResolveDataset(string pathOrId, string? hfHome = null) => Resolve(pathOrId, "datasets", hfHome);

    /// <summary>
    /// The hub cache folder: <c>$HF_HUB_CACHE</c> if set (and no explicit home is given), else <c>HF_HOME/hub</c>, else
    /// <c>~/.cache/huggingface/hub</c>, the same order the Hugging Face libraries use.
    /// </summary>
    public static string HubCacheFolder(string? hfHome = null)
    {
        if (hfHome is null && Environment.GetEnvironmentVariable("HF_HUB_CACHE") is { Length: > 0 } hubCache)
            return hubCache;
        hfHome ??= Environment.GetEnvironmentVariable("HF_HOME") is { Length: > 0 } env
            ? env
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "huggingface");
        return Path.Combine(hfHome, "hub");
    }

    private static string Resolve(string pathOrId, string kind, string? hfHome)
    {
        if (string.IsNullOrWhiteSpace(pathOrId)) throw new ArgumentException($"empty {kind[..^1]} path or hub id");
        if (Directory.Exists(pathOrId) || File.Exists(pathOrId)) return Path.GetFullPath(pathOrId);
        if (!HubId().IsMatch(pathOrId))
            throw new FileNotFoundException($"'{pathOrId}' is neither an existing file or folder nor a hub id like org/name");

        string cache = HubCacheFolder(hfHome);
        string repo = Path.Combine(cache, $"{kind}--{pathOrId.Replace("/", "--")}");
        string? snapshot = PickSnapshot(repo);
        if (snapshot is not null) return snapshot;

        string repoTypeFlag = kind == "datasets" ? " --repo-type dataset" : "";
        throw new FileNotFoundException(
            $"'{pathOrId}' is not a local path and is not in the Hugging Face cache (looked in {Path.Combine(repo, "snapshots")}); " +
            $"download it with: huggingface-cli download {pathOrId}{repoTypeFlag}");
    }

    /// <summary>The snapshot <c>refs/main</c> names when it exists, else the most recently written one.</summary>
    private static string? PickSnapshot(string repo)
    {
        string snapshots = Path.Combine(repo, "snapshots");
        if (!Directory.Exists(snapshots)) return null;

        string refMain = Path.Combine(repo, "refs", "main");
        if (File.Exists(refMain))
        {
            string commit = File.ReadAllText(refMain).Trim();
            string named = Path.Combine(snapshots, commit);
            if (commit.Length > 0 && commit == Path.GetFileName(commit) && Directory.Exists(named)) return named;
        }
        return new DirectoryInfo(snapshots).EnumerateDirectories()
            .OrderByDescending(d => d.LastWriteTimeUtc)
            .ThenBy(d => d.Name, StringComparer.Ordinal)
            .Select(d => d.FullName)
            .FirstOrDefault();
    }
}
