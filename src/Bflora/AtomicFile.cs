namespace Bflora;

/// <summary>
/// Writes a file under a temporary name in the same folder, flushes it to disk and renames it into place, so a
/// reader never sees a half-written checkpoint or config and a crash leaves the previous version intact.
/// </summary>
public static class AtomicFile
{
    public static void Write(string path, Action<Stream> write)
    {
        string fullPath = Path.GetFullPath(path);
        string folder = Path.GetDirectoryName(fullPath)!;
        Directory.CreateDirectory(folder);
        string temp = Path.Combine(folder, $".{Path.GetFileName(fullPath)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
            {
                write(stream);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, fullPath, overwrite: true);
        }
        finally
        {
            if (File.Exists(temp)) File.Delete(temp);
        }
    }

    /// <summary>
    /// Fails now, with one line naming <paramref name="path"/>, when <see cref="Write"/> could not write it later: the
    /// path is a folder, or the folder it would go into (or the nearest one that exists, which Write would create the
    /// rest under) cannot take a new file. For outputs written after a long run (an eval's JSON). Creates nothing.
    /// </summary>
    public static void EnsureWritable(string path, string what)
    {
        string fullPath = Path.GetFullPath(path);
        if (Directory.Exists(fullPath)) throw new BfloraInputException($"{what} {fullPath} is a folder, not a file");
        string? folder = Path.GetDirectoryName(fullPath);
        while (folder is not null && !Directory.Exists(folder))
        {
            if (File.Exists(folder)) throw new BfloraInputException($"cannot write {what} {fullPath}: {folder} is a file");
            folder = Path.GetDirectoryName(folder);
        }
        if (folder is null) throw new BfloraInputException($"cannot write {what} {fullPath}: no folder of it exists");
        try
        {
            ProbeFolder(folder);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new BfloraInputException($"cannot write {what} {fullPath}: {e.Message}");
        }
    }

    /// <summary>
    /// Creates and deletes an empty hidden file in <paramref name="folder"/>: the one sure test that a new file can go
    /// there (permissions, a read-only mount). Throws the IOException or UnauthorizedAccessException that says why not.
    /// </summary>
    public static void ProbeFolder(string folder)
    {
        string probe = Path.Combine(folder, $".write-test-{Guid.NewGuid():N}");
        try
        {
            using (new FileStream(probe, FileMode.CreateNew, FileAccess.Write)) { }
            File.Delete(probe);
        }
        // The probe's own name in the reason would only puzzle: the user named the folder, not it. A file system
        // that has no way to make files (/proc) answers "not found".
        catch (FileNotFoundException e)
        {
            throw new IOException($"{folder} cannot hold new files", e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            string reason = e.Message.Replace($"'{probe}'", "").Replace(probe, "").TrimEnd(' ', ':', '.');
            throw new IOException($"{folder}: {(reason.Length > 0 ? reason : e.GetType().Name)}", e);
        }
    }

    public static void WriteAllText(string path, string text) =>
        Write(path, stream =>
        {
            using var writer = new StreamWriter(stream, leaveOpen: true);
            writer.Write(text);
        });
}
