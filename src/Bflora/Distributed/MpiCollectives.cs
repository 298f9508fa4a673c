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

    public void ReduceScatter(Tensor input, Tensor output)
    {
        CollectiveArgs.Scatter(input, output, WorldSize);
        int count = CollectiveArgs.Count(output.numel(), "reduce-scatter");
        lock (_gate)
            MpiNative.Check(MpiNative.MPI_Reduce_scatter_block(Data(input), Data(output), count, _float, _sum, _comm), "MPI_Reduce_scatter_block");
    }

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

    private static void* Data(Tensor t) => TensorPointer.Of(t);

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
