namespace Bflora.Tests.Checkpoints;

/// <summary>A fresh folder under the system temp folder, removed with everything in it on dispose.</summary>
internal sealed class TempFolder : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("bflora-ckpt-").FullName;

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); }
        catch (IOException) { /* a leftover temp folder must not fail a test */ }
    }
}
