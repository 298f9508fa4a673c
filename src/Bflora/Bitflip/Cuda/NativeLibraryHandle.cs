using System.Runtime.InteropServices;

namespace Bflora.Bitflip.Cuda;

/// <summary>Opens the first loadable of several candidate libraries and resolves its exports, with errors that say which.</summary>
internal sealed class NativeLibraryHandle
{
    readonly IntPtr _handle;
    public string Path { get; }

    NativeLibraryHandle(IntPtr handle, string path)
    {
        _handle = handle;
        Path = path;
    }

    /// <summary>The first candidate (a full path or a soname) that loads; what is needed says why, in the error.</summary>
    public static NativeLibraryHandle Open(string what, IEnumerable<string> candidates)
    {
        var tried = new List<string>();
        foreach (var candidate in candidates.Distinct())
        {
            if (NativeLibrary.TryLoad(candidate, out var handle)) return new NativeLibraryHandle(handle, candidate);
            tried.Add(candidate);
        }
        throw new BfloraInputException($"the CUDA flip kernels need {what}; none of these loaded: {string.Join(", ", tried)}");
    }

    public IntPtr Export(string name) => NativeLibrary.TryGetExport(_handle, name, out var address)
        ? address
        : throw new BfloraInputException($"{Path} has no export {name}");
}
