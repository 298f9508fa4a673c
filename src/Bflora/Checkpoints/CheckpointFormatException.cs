namespace Bflora.Checkpoints;

/// <summary>
/// A checkpoint or config file that cannot be used as it is. The message is one line that names the file and the problem,
/// so the CLI can print it unchanged after "error:".
/// </summary>
public sealed class CheckpointFormatException : Exception
{
    public string FilePath { get; }

    public CheckpointFormatException(string filePath, string problem, Exception? inner = null)
        : base(OneLine.Of($"{filePath}: {problem}"), inner)
    {
        FilePath = filePath;
    }
}
