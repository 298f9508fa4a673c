using System.Runtime.InteropServices;

namespace Bflora.Devices;

/// <summary>
/// Lets the self-contained build run on another libtorch, e.g. the CUDA one of an installed PyTorch, without
/// rebuilding: TorchSharp's own native wrapper (libLibTorchSharp.so in the app folder) names libc10.so,
/// libtorch_cpu.so and libtorch.so by soname only, and the dynamic linker takes a library of that soname that is
/// already loaded before it searches the app folder. So loading that folder's libraries first, by full path and in
/// dependency order, binds TorchSharp to them instead of the bundled CPU-only ones, and their libtorch_cuda.so makes
/// CUDA visible to torch.cuda.is_available(). It must run before any TorchSharp call; it lives in this library rather
/// than the CLI so that the library's module initializer (<see cref="OpenMpSettings"/>) has set OMP_WAIT_POLICY before
/// libtorch's OpenMP runtime is loaded with it.
/// </summary>
public static class LibTorchPreload
{
    /// <summary>The environment variable naming the libtorch folder.</summary>
    public const string Variable = "BFLORA_LIBTORCH";

    /// <summary>Dependency order; the CUDA ones are optional, since a CPU-only folder lacks them.</summary>
    private static readonly (string File, bool Required)[] Libraries =
    {
        ("libc10.so", true), ("libtorch_cpu.so", true), ("libc10_cuda.so", false), ("libtorch_cuda.so", false),
        ("libtorch.so", true),
    };

    /// <summary>Preloads from the folder in <see cref="Variable"/>, if set; returns the files loaded (none when unset).</summary>
    public static IReadOnlyList<string> FromEnvironment() =>
        Environment.GetEnvironmentVariable(Variable) is { Length: > 0 } folder ? From(folder) : [];

    /// <summary>Loads the libtorch libraries of <paramref name="folder"/>; a missing folder or library is one error line.</summary>
    public static IReadOnlyList<string> From(string folder)
    {
        string full = Path.GetFullPath(folder);
        if (!Directory.Exists(full))
            throw new BfloraInputException($"{Variable}={folder}: no such folder (name a libtorch folder, e.g. .../site-packages/torch/lib)");
        var loaded = new List<string>();
        foreach (var (file, required) in Libraries)
        {
            string path = Path.Combine(full, file);
            if (!required && !File.Exists(path)) continue;
            try
            {
                NativeLibrary.Load(path);
            }
            catch (DllNotFoundException e)
            {
                throw new BfloraInputException($"{Variable}={folder}: cannot load {path}: {LoaderMessage(e, path)}");
            }
            loaded.Add(path);
        }
        return loaded;
    }

    /// <summary>
    /// The dynamic linker's own words (dlerror) from .NET's message, which wraps them in several lines of advice.
    /// </summary>
    private static string LoaderMessage(DllNotFoundException e, string path)
    {
        var lines = e.Message.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        return lines.LastOrDefault(l => l.Contains(path, StringComparison.Ordinal) && l != lines[0]) ?? lines.Last();
    }
}
