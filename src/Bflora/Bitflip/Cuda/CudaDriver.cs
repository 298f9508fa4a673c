using System.Runtime.InteropServices;

namespace Bflora.Bitflip.Cuda;

/// <summary>
/// The few CUDA driver API calls the flip kernels need: load a module, find its functions, launch on the legacy
/// default stream (the stream libtorch uses unless told otherwise, and bflora never tells it otherwise), in the
/// device's primary context (the one libtorch's runtime calls use). Bound at run time from the NVIDIA driver's
/// libcuda.so.1, so the CPU build never needs it.
/// </summary>
internal sealed unsafe class CudaDriver
{
    const int ComputeCapabilityMajor = 75, ComputeCapabilityMinor = 76;

    readonly delegate* unmanaged<uint, int> _init;
    readonly delegate* unmanaged<int*, int, int> _deviceGet;
    readonly delegate* unmanaged<int*, int, int, int> _deviceGetAttribute;
    readonly delegate* unmanaged<IntPtr*, int, int> _primaryCtxRetain;
    readonly delegate* unmanaged<IntPtr*, int> _ctxGetCurrent;
    readonly delegate* unmanaged<IntPtr, int> _ctxSetCurrent;
    readonly delegate* unmanaged<int> _ctxSynchronize;
    readonly delegate* unmanaged<IntPtr*, void*, int> _moduleLoadData;
    readonly delegate* unmanaged<IntPtr*, IntPtr, byte*, int> _moduleGetFunction;
    readonly delegate* unmanaged<IntPtr, uint, uint, uint, uint, uint, uint, uint, IntPtr, void**, void**, int> _launchKernel;
    readonly delegate* unmanaged<int, byte**, int> _getErrorString;
    readonly delegate* unmanaged<nuint*, nuint*, int> _memGetInfo;

    static readonly Lazy<CudaDriver> s_instance = new(() => new CudaDriver(), LazyThreadSafetyMode.ExecutionAndPublication);

    public static CudaDriver Instance => s_instance.Value;

    CudaDriver()
    {
        var lib = NativeLibraryHandle.Open("the NVIDIA driver's libcuda.so.1", new[] { "libcuda.so.1", "libcuda.so" });
        _init = (delegate* unmanaged<uint, int>)lib.Export("cuInit");
        _deviceGet = (delegate* unmanaged<int*, int, int>)lib.Export("cuDeviceGet");
        _deviceGetAttribute = (delegate* unmanaged<int*, int, int, int>)lib.Export("cuDeviceGetAttribute");
        _primaryCtxRetain = (delegate* unmanaged<IntPtr*, int, int>)lib.Export("cuDevicePrimaryCtxRetain");
        _ctxGetCurrent = (delegate* unmanaged<IntPtr*, int>)lib.Export("cuCtxGetCurrent");
        _ctxSetCurrent = (delegate* unmanaged<IntPtr, int>)lib.Export("cuCtxSetCurrent");
        _ctxSynchronize = (delegate* unmanaged<int>)lib.Export("cuCtxSynchronize");
        _moduleLoadData = (delegate* unmanaged<IntPtr*, void*, int>)lib.Export("cuModuleLoadData");
        _moduleGetFunction = (delegate* unmanaged<IntPtr*, IntPtr, byte*, int>)lib.Export("cuModuleGetFunction");
        _launchKernel = (delegate* unmanaged<IntPtr, uint, uint, uint, uint, uint, uint, uint, IntPtr, void**, void**, int>)
            lib.Export("cuLaunchKernel");
        _getErrorString = (delegate* unmanaged<int, byte**, int>)lib.Export("cuGetErrorString");
        _memGetInfo = (delegate* unmanaged<nuint*, nuint*, int>)lib.Export("cuMemGetInfo_v2");
        Check(_init(0), "cuInit");
    }

    /// <summary>The device's primary context, made current on the calling thread (autograd runs CUDA backward on its own threads).</summary>
    public IntPtr Enter(int ordinal)
    {
        int device;
        Check(_deviceGet(&device, ordinal), "cuDeviceGet");
        IntPtr context;
        Check(_primaryCtxRetain(&context, device), "cuDevicePrimaryCtxRetain");
        MakeCurrent(context);
        return context;
    }

    /// <summary>Makes an already retained context current on the calling thread, if it is not.</summary>
    public void MakeCurrent(IntPtr context)
    {
        IntPtr current;
        Check(_ctxGetCurrent(&current), "cuCtxGetCurrent");
        if (current != context) Check(_ctxSetCurrent(context), "cuCtxSetCurrent");
    }

    public (int Major, int Minor) ComputeCapability(int ordinal)
    {
        int device, major, minor;
        Check(_deviceGet(&device, ordinal), "cuDeviceGet");
        Check(_deviceGetAttribute(&major, ComputeCapabilityMajor, device), "cuDeviceGetAttribute");
        Check(_deviceGetAttribute(&minor, ComputeCapabilityMinor, device), "cuDeviceGetAttribute");
        return (major, minor);
    }

    public IntPtr LoadModule(byte[] image)
    {
        IntPtr module;
        fixed (byte* p = image) Check(_moduleLoadData(&module, p), "cuModuleLoadData");
        return module;
    }

    public IntPtr Function(IntPtr module, string name)
    {
        IntPtr function;
        var bytes = System.Text.Encoding.ASCII.GetBytes(name + "\0");
        fixed (byte* p = bytes) Check(_moduleGetFunction(&function, module, p), $"cuModuleGetFunction({name})");
        return function;
    }

    /// <summary>Launches function with one by-value struct argument on the default stream.</summary>
    public void Launch<T>(IntPtr function, uint grid, uint block, in T argument) where T : unmanaged
    {
        fixed (T* arg = &argument)
        {
            void* parameter = arg;
            Check(_launchKernel(function, grid, 1, 1, block, 1, 1, 0, IntPtr.Zero, &parameter, null), "cuLaunchKernel");
        }
    }

    /// <summary>
    /// Bytes of the device's memory in use by all processes (total − free): for bflora alone, what libtorch's caching
    /// allocator holds plus the context, the number that says whether a run fits.
    /// </summary>
    public long MemoryInUse(int ordinal)
    {
        Enter(ordinal);
        nuint free, total;
        Check(_memGetInfo(&free, &total), "cuMemGetInfo");
        return (long)(total - free);
    }

    /// <summary>Waits for all queued work; reports a kernel's asynchronous failure.</summary>
    public void Synchronize() => Check(_ctxSynchronize(), "cuCtxSynchronize");

    void Check(int result, string call)
    {
        if (result == 0) return;
        byte* text = null;
        string message = _getErrorString != null && _getErrorString(result, &text) == 0 && text != null
            ? Marshal.PtrToStringAnsi((IntPtr)text) ?? "" : "";
        throw new InvalidOperationException($"{call} failed with CUDA error {result} {message}".TrimEnd());
    }
}
