using static TorchSharp.torch;

namespace Bflora.Distributed;

/// <summary>
/// The slow, obvious twin of an <see cref="ICollectives"/>: every collective except Broadcast and Barrier is rebuilt
/// from one broadcast per rank plus element loops (sums in rank order 0, 1, ...), so it shares no reduction or gather
/// code with MPI. Tests run both on the same inputs and require equal results. Not for training: it moves W times the data.
/// </summary>
public sealed unsafe class ReferenceCollectives(ICollectives inner) : ICollectives
{
    public int Rank => inner.Rank;
    public int WorldSize => inner.WorldSize;

    public void AllGather(Tensor input, Tensor output)
    {
        CollectiveArgs.Gather(input, output, WorldSize);
        long n = input.numel();
        int size = (int)input.element_size();
        var flat = output.view(-1);
        for (int r = 0; r < WorldSize; r++)
        {
            using var chunk = flat.narrow(0, r * n, n);
            if (r == Rank) CopyBytes(input, chunk, n * size);
            inner.Broadcast(chunk, r);
        }
    }

    public IPendingCollective StartAllGather(Tensor input, Tensor output)
    {
        AllGather(input, output);
        return new Completed();
    }

    public void ReduceScatter(Tensor input, Tensor output)
    {
        CollectiveArgs.Scatter(input, output, WorldSize);
        long n = output.numel();
        var sum = Combine(input, ReduceOp.Sum);
        float* dst = (float*)Bitflip.TensorBits.Pointer(output);
        for (long i = 0; i < n; i++) dst[i] = sum[Rank * n + i];
    }

    public void AllReduce(Tensor tensor, ReduceOp op)
    {
        CollectiveArgs.Reducible(tensor, "all-reduce");
        var result = Combine(tensor, op);
        float* dst = (float*)Bitflip.TensorBits.Pointer(tensor);
        for (long i = 0; i < result.Length; i++) dst[i] = result[i];
    }

    public void Broadcast(Tensor tensor, int root) => inner.Broadcast(tensor, root);

    public void Barrier() => inner.Barrier();

    /// <summary>Every rank's copy of <paramref name="local"/>, broadcast one after another and folded in rank order.</summary>
    private float[] Combine(Tensor local, ReduceOp op)
    {
        long n = local.numel();
        var acc = new float[n];
        using var buffer = empty(n, ScalarType.Float32);
        float* b = (float*)Bitflip.TensorBits.Pointer(buffer);
        for (int r = 0; r < WorldSize; r++)
        {
            if (r == Rank) CopyBytes(local, buffer, n * sizeof(float));
            inner.Broadcast(buffer, r);
            for (long i = 0; i < n; i++)
                acc[i] = r == 0 ? b[i] : op == ReduceOp.Sum ? acc[i] + b[i] : MathF.Max(acc[i], b[i]);
        }
        return acc;
    }

    private static void CopyBytes(Tensor from, Tensor to, long bytes)
    {
        byte* s = (byte*)Bitflip.TensorBits.Pointer(from), d = (byte*)Bitflip.TensorBits.Pointer(to);
        for (long i = 0; i < bytes; i++) d[i] = s[i];
    }

    private sealed class Completed : IPendingCollective
    {
        public void Wait() { }
    }
}
