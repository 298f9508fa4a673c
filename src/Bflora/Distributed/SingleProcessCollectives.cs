using static TorchSharp.torch;

namespace Bflora.Distributed;

/// <summary>
/// World size 1: every collective is a copy or nothing. It checks arguments exactly as <see cref="MpiCollectives"/>
/// does, so code that would fail under mpirun also fails in a single-process test.
/// </summary>
public sealed unsafe class SingleProcessCollectives : ICollectives
{
    public int Rank => 0;
    public int WorldSize => 1;

    public void AllGather(Tensor input, Tensor output)
    {
        CollectiveArgs.Gather(input, output, 1);
        CopyUnlessSame(input, output);
    }

    public IPendingCollective StartAllGather(Tensor input, Tensor output)
    {
        AllGather(input, output);
        return Done.Instance;
    }

    public void ReduceScatter(Tensor input, Tensor output)
    {
        CollectiveArgs.Scatter(input, output, 1);
        CopyUnlessSame(input, output);
    }

    public void AllReduce(Tensor tensor, ReduceOp op) => CollectiveArgs.Reducible(tensor, "all-reduce");

    public void Broadcast(Tensor tensor, int root)
    {
        CollectiveArgs.Movable(tensor, "broadcast");
        CollectiveArgs.Root(root, 1);
    }

    public void Barrier() { }

    // Memory is copied as MPI writes it, not by a torch op: autograd then sees a gather into a buffer whose views it
    // saved exactly as it does under mpirun (a re-gather before backward restores the same values). A view of the
    // same memory (e.g. output.view(input.shape)) needs no copy.
    private static void CopyUnlessSame(Tensor input, Tensor output)
    {
        void* source = Bitflip.TensorBits.Pointer(input), target = Bitflip.TensorBits.Pointer(output);
        if (source == target) return;
        long bytes = input.numel() * input.element_size();
        Buffer.MemoryCopy(source, target, bytes, bytes);
    }

    private sealed class Done : IPendingCollective
    {
        public static readonly Done Instance = new();
        public void Wait() { }
    }
}
