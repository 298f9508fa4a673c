using System.Runtime.InteropServices;

namespace Bflora.Distributed;

/// <summary>
/// The few Open MPI entry points the collectives need, bound by P/Invoke to libmpi.so.40 (Debian's libopenmpi3).
/// Open MPI's predefined handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM, ...) are addresses of exported globals, so they are
/// resolved with <see cref="NativeLibrary.GetExport"/> rather than hard-coded; MPICH would need other values.
/// </summary>
internal static unsafe class MpiNative
{
    private const string Lib = "libmpi.so.40";

    /// <summary>Open MPI's MPI_IN_PLACE sentinel is (void*)1 (MPICH's -1 crashes here).</summary>
    public static readonly void* InPlace = (void*)1;

    /// <summary>MPI_THREAD_SERIALIZED: any thread may call MPI, never two at once (the collectives hold a lock).</summary>
    public const int ThreadSerialized = 2;
    public const int Success = 0;

    private static readonly Lazy<nint> Handle = new(() => NativeLibrary.Load(Lib));
    public static nint CommWorld => Export("ompi_mpi_comm_world");
    public static nint Float => Export("ompi_mpi_float");
    /// <summary>bf16 travels as a 16-bit integer: gathers and broadcasts only move bits.</summary>
    public static nint UInt16 => Export("ompi_mpi_uint16_t");
    public static nint OpSum => Export("ompi_mpi_op_sum");
    public static nint OpMax => Export("ompi_mpi_op_max");
    public static nint StatusIgnore => 0;

    private static nint Export(string name) => NativeLibrary.GetExport(Handle.Value, name);

    /// <summary>True when libmpi.so.40 can be loaded on this machine.</summary>
    public static bool Available()
    {
        try { _ = Handle.Value; return true; }
        catch (DllNotFoundException) { return false; }
    }

    [DllImport(Lib)] public static extern int MPI_Init_thread(int* argc, byte*** argv, int required, int* provided);
    [DllImport(Lib)] public static extern int MPI_Initialized(int* flag);
    [DllImport(Lib)] public static extern int MPI_Finalized(int* flag);
    [DllImport(Lib)] public static extern int MPI_Finalize();
    [DllImport(Lib)] public static extern int MPI_Abort(nint comm, int errorCode);
    [DllImport(Lib)] public static extern int MPI_Comm_rank(nint comm, int* rank);
    [DllImport(Lib)] public static extern int MPI_Comm_size(nint comm, int* size);
    [DllImport(Lib)] public static extern int MPI_Barrier(nint comm);
    [DllImport(Lib)] public static extern int MPI_Bcast(void* buffer, int count, nint datatype, int root, nint comm);
    [DllImport(Lib)] public static extern int MPI_Allgather(void* send, int sendCount, nint sendType, void* recv, int recvCount, nint recvType, nint comm);
    [DllImport(Lib)] public static extern int MPI_Iallgather(void* send, int sendCount, nint sendType, void* recv, int recvCount, nint recvType, nint comm, nint* request);
    [DllImport(Lib)] public static extern int MPI_Sendrecv(void* send, int sendCount, nint sendType, int dest, int sendTag,
        void* recv, int recvCount, nint recvType, int source, int recvTag, nint comm, nint status);
    [DllImport(Lib)] public static extern int MPI_Allreduce(void* send, void* recv, int count, nint datatype, nint op, nint comm);
    [DllImport(Lib)] public static extern int MPI_Wait(nint* request, nint status);
    [DllImport(Lib)] public static extern int MPI_Test(nint* request, int* flag, nint status);

    /// <summary>Turns an MPI return code into an exception (the default error handler aborts first, so this is a backstop).</summary>
    public static void Check(int code, string call)
    {
        if (code != Success) throw new InvalidOperationException($"{call} failed with MPI error code {code}");
    }
}
