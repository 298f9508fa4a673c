using System.Runtime.InteropServices;
using System.Text;

namespace Bflora.Bitflip.Cuda;

/// <summary>
/// NVRTC, CUDA's run-time compiler, as shipped with PyTorch's CUDA wheels: compiles flip_kernels.cu to a cubin for
/// the GPU at hand, so bflora carries no CUDA toolchain and no prebuilt binaries.
/// </summary>
internal sealed unsafe class Nvrtc
{
    readonly delegate* unmanaged<IntPtr*, byte*, byte*, int, byte**, byte**, int> _createProgram;
    readonly delegate* unmanaged<IntPtr, int, byte**, int> _compileProgram;
    readonly delegate* unmanaged<IntPtr, nuint*, int> _getProgramLogSize;
    readonly delegate* unmanaged<IntPtr, byte*, int> _getProgramLog;
    readonly delegate* unmanaged<IntPtr, nuint*, int> _getCubinSize;
    readonly delegate* unmanaged<IntPtr, byte*, int> _getCubin;
    readonly delegate* unmanaged<IntPtr*, int> _destroyProgram;
    readonly delegate* unmanaged<int*, int*, int> _version;

    public string LibraryPath { get; }

    /// <param name="library">libnvrtc's path; null searches (<see cref="Candidates"/>).</param>
    public Nvrtc(string? library = null)
    {
        var lib = NativeLibraryHandle.Open("NVRTC (libnvrtc.so, e.g. from PyTorch's nvidia CUDA wheels)",
            library is null ? Candidates() : WithBuiltins(new[] { library }));
        LibraryPath = lib.Path;
        _createProgram = (delegate* unmanaged<IntPtr*, byte*, byte*, int, byte**, byte**, int>)lib.Export("nvrtcCreateProgram");
        _compileProgram = (delegate* unmanaged<IntPtr, int, byte**, int>)lib.Export("nvrtcCompileProgram");
        _getProgramLogSize = (delegate* unmanaged<IntPtr, nuint*, int>)lib.Export("nvrtcGetProgramLogSize");
        _getProgramLog = (delegate* unmanaged<IntPtr, byte*, int>)lib.Export("nvrtcGetProgramLog");
        _getCubinSize = (delegate* unmanaged<IntPtr, nuint*, int>)lib.Export("nvrtcGetCUBINSize");
        _getCubin = (delegate* unmanaged<IntPtr, byte*, int>)lib.Export("nvrtcGetCUBIN");
        _destroyProgram = (delegate* unmanaged<IntPtr*, int>)lib.Export("nvrtcDestroyProgram");
        _version = (delegate* unmanaged<int*, int*, int>)lib.Export("nvrtcVersion");
    }

    public (int Major, int Minor) Version
    {
        get
        {
            int major, minor;
            Check(_version(&major, &minor), "nvrtcVersion");
            return (major, minor);
        }
    }

    /// <summary>
    /// Where NVRTC may be: BFLORA_NVRTC (a file), the nvidia wheels beside the PyTorch whose torch/lib BFLORA_LIBTORCH
    /// names (site-packages/nvidia/*/lib), a CUDA toolkit's lib64 (CUDA_HOME, CUDA_PATH, /usr/local/cuda), then the
    /// loader's own search. A file's builtins library is loaded first by full path, because NVRTC opens it by name and
    /// a wheel's folder is on no search path.
    /// </summary>
    static IEnumerable<string> Candidates()
    {
        var files = new List<string>();
        if (Environment.GetEnvironmentVariable("BFLORA_NVRTC") is { Length: > 0 } explicitPath) files.Add(explicitPath);
        if (Environment.GetEnvironmentVariable("BFLORA_LIBTORCH") is { Length: > 0 } torchLib)
            files.AddRange(Found(Path.Combine(torchLib, "..", "..", "nvidia"), SearchOption.AllDirectories));
        foreach (var home in new[] { Environment.GetEnvironmentVariable("CUDA_HOME"), Environment.GetEnvironmentVariable("CUDA_PATH"), "/usr/local/cuda" })
            if (home is { Length: > 0 }) files.AddRange(Found(Path.Combine(home, "lib64"), SearchOption.TopDirectoryOnly));
        return WithBuiltins(files).Concat(new[] { "libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so" });
    }

    /// <summary>The libnvrtc files in a folder, newest version first; none when it does not exist.</summary>
    static IEnumerable<string> Found(string folder, SearchOption depth) => Directory.Exists(folder)
        ? Directory.EnumerateFiles(Path.GetFullPath(folder), "libnvrtc.so*", depth).OrderByDescending(f => f, StringComparer.Ordinal)
        : [];

    /// <summary>The files, each after loading the builtins library beside it.</summary>
    static IEnumerable<string> WithBuiltins(IEnumerable<string> files)
    {
        foreach (var file in files)
        {
            if (Path.GetDirectoryName(Path.GetFullPath(file)) is { } folder && Directory.Exists(folder))
                foreach (var builtins in Directory.EnumerateFiles(folder, "libnvrtc-builtins.so*"))
                    NativeLibrary.TryLoad(builtins, out _);
            yield return file;
        }
    }

    /// <summary>Compiles source to a cubin with the given options; a compile error carries NVRTC's log.</summary>
    public byte[] CompileToCubin(string source, string name, IReadOnlyList<string> options)
    {
        IntPtr program;
        var sourceBytes = Encoding.UTF8.GetBytes(source + "\0");
        var nameBytes = Encoding.ASCII.GetBytes(name + "\0");
        fixed (byte* s = sourceBytes, n = nameBytes)
            Check(_createProgram(&program, s, n, 0, null, null), "nvrtcCreateProgram");
        try
        {
            var handles = options.Select(o => GCHandle.Alloc(Encoding.ASCII.GetBytes(o + "\0"), GCHandleType.Pinned)).ToArray();
            int result;
            try
            {
                var pointers = handles.Select(h => (IntPtr)h.AddrOfPinnedObject()).ToArray();
                fixed (IntPtr* p = pointers) result = _compileProgram(program, pointers.Length, (byte**)p);
            }
            finally
            {
                foreach (var h in handles) h.Free();
            }
            if (result != 0) throw new InvalidOperationException($"NVRTC could not compile {name} (error {result}):\n{Log(program)}");
            nuint size;
            Check(_getCubinSize(program, &size), "nvrtcGetCUBINSize");
            var cubin = new byte[(int)size];
            fixed (byte* c = cubin) Check(_getCubin(program, c), "nvrtcGetCUBIN");
            return cubin;
        }
        finally
        {
            _destroyProgram(&program);
        }
    }

    string Log(IntPtr program)
    {
        nuint size;
        if (_getProgramLogSize(program, &size) != 0 || size == 0) return "";
        var log = new byte[(int)size];
        fixed (byte* l = log) _getProgramLog(program, l);
        return Encoding.UTF8.GetString(log).TrimEnd('\0', '\n');
    }

    static void Check(int result, string call)
    {
        if (result != 0) throw new InvalidOperationException($"{call} failed with NVRTC error {result}");
    }
}
