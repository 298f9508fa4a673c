using System.Runtime.InteropServices;

namespace Bflora.Devices;

/// <summary>One library loaded from the <see cref="LibTorchPreload.Variable"/> folder.</summary>
/// <param name="Name">The name TorchSharp asks for: the file name without "lib" and ".so" (torch_cpu, torch_cuda, …).</param>
public sealed record PreloadedLibrary(string Name, string Path, nint Handle);

/// <summary>
/// Lets the self-contained build run on another libtorch, e.g. the CUDA one of an installed PyTorch, without
/// rebuilding: TorchSharp's native wrapper (libLibTorchSharp.so in the app folder) names libc10.so, libtorch_cpu.so and
/// libtorch.so by soname only, and the dynamic linker takes a library of that soname that is already loaded before it
/// searches the app folder. So loading that folder's libraries first, by full path and in dependency order, binds
/// TorchSharp to them instead of the bundled CPU-only ones, and their libtorch_cuda.so makes CUDA visible to
/// torch.cuda.is_available(). It must run before any TorchSharp call. It lives in this library rather than the CLI so
/// that the library's module initializer (<see cref="OpenMpSettings"/>) has set OMP_WAIT_POLICY before libtorch's
/// OpenMP runtime is loaded with it. (TorchSharp also loads "torch_cpu" by name itself, which would find the bundled
/// copy in the app folder; the CLI's load context answers that request with the library loaded here.)
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

    /// <summary>The folder named by <see cref="Variable"/>, or null when it is unset or empty.</summary>
    public static string? Folder => Environment.GetEnvironmentVariable(Variable) is { Length: > 0 } folder ? folder : null;

    /// <summary>Loads the libtorch libraries of <paramref name="folder"/>; a missing folder or library is one error line.</summary>
    public static IReadOnlyList<PreloadedLibrary> From(string folder)
    {
        string full = System.IO.Path.GetFullPath(folder);
        if (!Directory.Exists(full))
            throw new BfloraInputException($"{Variable}={folder}: no such folder (name a libtorch folder, e.g. .../site-packages/torch/lib)");
        var loaded = new List<PreloadedLibrary>();
        foreach (var (file, required) in Libraries)
        {
            string path = System.IO.Path.Combine(full, file);
            if (!required && !File.Exists(path)) continue;
            try
            {
                loaded.Add(new PreloadedLibrary(NameOf(file), path, NativeLibrary.Load(path)));
            }
            catch (DllNotFoundException e)
            {
                throw new BfloraInputException($"{Variable}={folder}: cannot load {path}: {LoaderMessage(e, path)}");
            }
        }
        return loaded;
    }

    /// <summary>A library name as a DllImport or NativeLibrary.Load call writes it: "torch_cpu" for libtorch_cpu.so.</summary>
    public static string NameOf(string library)
    {
        string name = library.EndsWith(".so", StringComparison.Ordinal) ? library[..^3] : library;
        return name.StartsWith("lib", StringComparison.Ordinal) ? name[3..] : name;
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
