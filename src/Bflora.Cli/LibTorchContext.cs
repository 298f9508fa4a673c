using System.Reflection;
using System.Runtime.Loader;
using Bflora.Devices;

namespace Bflora.Cli;

/// <summary>
/// Runs the CLI on the libtorch that BFLORA_LIBTORCH names. Preloading it (<see cref="LibTorchPreload"/>) is not enough
/// on its own: TorchSharp's first call also loads "torch_cpu" by name, .NET finds the bundled libtorch_cpu.so in the
/// app folder, and that second libtorch in the process aborts it while registering its operators ("Tried to register
/// multiple backend fallbacks"). Only a load context other than the default one can answer such a request itself, so
/// with the variable set the CLI starts again inside this one, which answers every library of that folder with the
/// copy already loaded.
/// </summary>
internal sealed class LibTorchContext : AssemblyLoadContext
{
    // TorchSharp must load here, since its requests for native libraries are the ones answered; the assemblies that use
    // its types come along so that they see this TorchSharp. Everything else is shared with the default context.
    private static readonly string[] Own = ["TorchSharp", "Bflora", "Bflora.Cli"];

    private readonly AssemblyDependencyResolver _assemblies;
    private readonly Dictionary<string, nint> _libraries;

    private LibTorchContext(string entry, IReadOnlyList<PreloadedLibrary> libraries) : base("bflora-libtorch")
    {
        _assemblies = new AssemblyDependencyResolver(entry);
        _libraries = libraries.ToDictionary(l => l.Name, l => l.Handle);
    }

    /// <summary>True when BFLORA_LIBTORCH is set and this is not yet the run inside the context.</summary>
    public static bool Wanted =>
        LibTorchPreload.Folder is not null && GetLoadContext(typeof(LibTorchContext).Assembly) == Default;

    /// <summary>Preloads the folder's libraries, then runs the CLI's entry point inside the context; returns its exit code.</summary>
    public static int Run(string[] args)
    {
        var libraries = LibTorchPreload.From(LibTorchPreload.Folder!);
        string entry = typeof(LibTorchContext).Assembly.Location;
        var context = new LibTorchContext(entry, libraries);
        var main = context.LoadFromAssemblyPath(entry).EntryPoint!;
        return (int)main.Invoke(null, BindingFlags.DoNotWrapExceptions, null, [args], null)!;
    }

    protected override Assembly? Load(AssemblyName name) =>
        Own.Contains(name.Name) && _assemblies.ResolveAssemblyToPath(name) is { } path ? LoadFromAssemblyPath(path) : null;

    protected override nint LoadUnmanagedDll(string name) =>
        _libraries.TryGetValue(LibTorchPreload.NameOf(name), out var handle) ? handle : 0;
}
