namespace Bflora.Training;

/// <summary>
/// One train run per output folder. Two would interleave their metrics rows, and the second's clean-up of unfinished
/// checkpoints would delete the first's while it is being written. The lock is the kernel's (an exclusive flock, which
/// .NET takes for FileShare.None), so a run that dies, however it dies, leaves no lock behind; the file itself is
/// removed when the run ends.
/// </summary>
public sealed class OutputLock : IDisposable
{
    public const string FileName = ".bflora-train.lock";

    private readonly FileStream _file;

    private OutputLock(FileStream file) => _file = file;

    /// <summary>Takes the folder's lock, or fails with one line when another run holds it.</summary>
    public static OutputLock Take(string folder)
    {
        string path = Path.Combine(folder, FileName);
        try
        {
            return new OutputLock(new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None));
        }
        // A flock held by another process: EWOULDBLOCK (Linux 11, macOS 35), or Windows' sharing violation.
        catch (IOException e) when (e.HResult is 11 or 35 || (e.HResult & 0xFFFF) == 32)
        {
            throw new BfloraInputException(
                $"another bflora train is writing to {folder} (it holds {path}): let it finish, stop it, or train into another --out");
        }
    }

    public void Dispose()
    {
        // Removed before it is let go, so no run can take the lock of a file that is already gone.
        File.Delete(_file.Name);
        _file.Dispose();
    }
}
