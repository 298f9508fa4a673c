using TorchSharp;
using static TorchSharp.torch;

namespace Bflora.Distributed;

/// <summary>
/// <see cref="ICollectives"/> over MPI_COMM_WORLD. MPI reads and writes the tensors' own memory (THSTensor_data), so
/// nothing is copied through managed arrays. MPI was initialised with MPI_THREAD_SERIALIZED; a lock keeps calls from two
/// threads from overlapping. Created by <see cref="DistributedRuntime"/>, which owns MPI_Init and MPI_Finalize.
/// </summary>
public sealed unsafe class MpiCollectives : ICollectives
{
    private readonly object _gate = new();
    private readonly nint _comm = MpiNative.CommWorld;
    private readonly nint _float = MpiNative.Float;
    private readonly nint _uint16 = MpiNative.UInt16;
    private readonly nint _sum = MpiNative.OpSum;
    private readonly nint _max = MpiNative.OpMax;

    public int Rank { get; }
    public int WorldSize { get; }

    internal MpiCollectives()
    {
        int rank, size;
        MpiNative.Check(MpiNative.MPI_Comm_rank(_comm, &rank), "MPI_Comm_rank");
        MpiNative.Check(MpiNative.MPI_Comm_size(_comm, &size), "MPI_Comm_size");
        Rank = rank;
        WorldSize = size;
    }

    public void AllGather(Tensor input, Tensor output)
    {
        CollectiveArgs.Gather(input, output, WorldSize);
        int count = CollectiveArgs.Count(input.numel(), "all-gather");
        var type = TypeOf(input);
        lock (_gate)
            MpiNative.Check(MpiNative.MPI_Allgather(Data(input), count, type, Data(output), count, type, _comm), "MPI_Allgather");
    }

    public IPendingCollective StartAllGather(Tensor input, Tensor output)
    {
        CollectiveArgs.Gather(input, output, WorldSize);
        int count = CollectiveArgs.Count(input.numel(), "all-gather");
        var type = TypeOf(input);
        nint request;
        lock (_gate)
            MpiNative.Check(MpiNative.MPI_Iallgather(Data(input), count, type, Data(output), count, type, _comm, &request), "MPI_Iallgather");
        return new Pending(this, request, input, output);
    }

    /// <summary>
    /// A ring reduce-scatter: W − 1 steps, each passing one running partial sum (fp32) to the next rank and adding this
    /// rank's own chunk to the one received; after the last step the partial for chunk Rank holds every rank's sum.
    /// Hand-written rather than MPI_Reduce_scatter_block because Open MPI allocates a full-size temporary on every
    /// call, and fresh large allocations fault in page by page here; these two reused buffers and torch's add_ avoid
    /// that (64 MiB fp32 at 2 ranks on the 2-core dev VM: MPI's 1.5 GB/s, this ring 6.6 GB/s).
    /// </summary>
    public void ReduceScatter(Tensor input, Tensor output)
    {
        CollectiveArgs.Scatter(input, output, WorldSize);
        long n = output.numel();
        int count = CollectiveArgs.Count(n, "reduce-scatter");
        using var flat = input.view(-1);
        Tensor Chunk(int index) => flat.narrow(0, (long)Mod(index) * n, n);
        lock (_gate)
        {
            using var result = output.view(-1);
            if (WorldSize == 1)
            {
                using var all = Chunk(0);
                result.copy_(all);
                return;
            }
            EnsureScratch(n);
            using var a = _scratchA!.narrow(0, 0, n);
            using var b = _scratchB!.narrow(0, 0, n);
            Tensor send = Chunk(Rank - 1), receive = a, spare = b;
            int next = Mod(Rank + 1), previous = Mod(Rank - 1);
            for (int step = 0; step < WorldSize - 1; step++)
            {
                MpiNative.Check(MpiNative.MPI_Sendrecv(Data(send), count, _float, next, step,
                    Data(receive), count, _float, previous, step, _comm, MpiNative.StatusIgnore), "MPI_Sendrecv");
                if (step == 0) send.Dispose();
                using (var own = Chunk(Rank - 2 - step)) receive.add_(own);
                (send, receive, spare) = (receive, spare, receive);
            }
            result.copy_(send);
        }
    }

    private Tensor? _scratchA, _scratchB;

    /// <summary>
    /// Two fp32 buffers of at least <paramref name="n"/> elements, kept between calls and grown when needed. They are
    /// detached from any caller's DisposeScope: a trainer calling inside a scope must not free them at its scope's end.
    /// </summary>
    private void EnsureScratch(long n)
    {
        if (_scratchA is not null && _scratchA.numel() >= n) return;
        _scratchA?.Dispose();
        _scratchB?.Dispose();
        _scratchA = empty(n, ScalarType.Float32).DetachFromDisposeScope();
        _scratchB = empty(n, ScalarType.Float32).DetachFromDisposeScope();
    }

    private int Mod(int i) => ((i % WorldSize) + WorldSize) % WorldSize;

    public void AllReduce(Tensor tensor, ReduceOp op)
    {
        CollectiveArgs.Reducible(tensor, "all-reduce");
        int count = CollectiveArgs.Count(tensor.numel(), "all-reduce");
        var mpiOp = op == ReduceOp.Sum ? _sum : _max;
        lock (_gate)
            MpiNative.Check(MpiNative.MPI_Allreduce(MpiNative.InPlace, Data(tensor), count, _float, mpiOp, _comm), "MPI_Allreduce");
    }

    public void Broadcast(Tensor tensor, int root)
    {
        CollectiveArgs.Movable(tensor, "broadcast");
        CollectiveArgs.Root(root, WorldSize);
        int count = CollectiveArgs.Count(tensor.numel(), "broadcast");
        lock (_gate)
            MpiNative.Check(MpiNative.MPI_Bcast(Data(tensor), count, TypeOf(tensor), root, _comm), "MPI_Bcast");
    }

    public void Barrier()
    {
        lock (_gate) MpiNative.Check(MpiNative.MPI_Barrier(_comm), "MPI_Barrier");
    }

    private nint TypeOf(Tensor t) => t.dtype == ScalarType.BFloat16 ? _uint16 : _float;

    private static void* Data(Tensor t) => Bitflip.TensorBits.Pointer(t);

    /// <summary>
    /// An MPI_Iallgather in flight. It holds the tensors so they cannot be freed under MPI. Open MPI progresses
    /// non-blocking collectives inside MPI calls, so the overlap is real only while other MPI calls (or Wait) run.
    /// </summary>
    private sealed class Pending(MpiCollectives owner, nint request, Tensor input, Tensor output) : IPendingCollective
    {
        private nint _request = request;
        private Tensor? _input = input, _output = output;

        public void Wait()
        {
            if (_output is null) return;
            lock (owner._gate)
            {
                nint r = _request;
                MpiNative.Check(MpiNative.MPI_Wait(&r, MpiNative.StatusIgnore), "MPI_Wait");
                _request = r;
            }
            GC.KeepAlive(_input);
            _input = _output = null;
        }
    }
}
