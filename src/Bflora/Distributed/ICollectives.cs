using TorchSharp;
using static TorchSharp.torch;

namespace Bflora.Distributed;

public enum ReduceOp { Sum, Max }

/// <summary>A collective started without waiting (e.g. the next block's all-gather while this block computes).</summary>
public interface IPendingCollective
{
    /// <summary>Blocks until the output tensor holds the result. Calling it again returns at once.</summary>
    void Wait();
}

/// <summary>
/// The collectives FSDP needs, on contiguous CPU tensors, working in place on tensor memory (no managed copies).
/// Dtypes: gathers and broadcasts move bf16 or fp32; reductions are fp32 only — DESIGN fixes fp32 gradient reductions
/// (mixed_precision_reduce = "float32"), and MPI has no bf16 sum, so bf16 reductions are refused rather than emulated.
/// Every rank must call the same collectives in the same order with tensors of the same shapes.
/// </summary>
public interface ICollectives
{
    int Rank { get; }
    int WorldSize { get; }

    /// <summary>output = concat over ranks r of input(r); output.numel = WorldSize · input.numel (bf16 or fp32).</summary>
    void AllGather(Tensor input, Tensor output);

    /// <summary><see cref="AllGather"/> started now; read <paramref name="output"/> only after Wait().</summary>
    IPendingCollective StartAllGather(Tensor input, Tensor output);

    /// <summary>output = chunk Rank of (sum over ranks of input); input.numel = WorldSize · output.numel (fp32).</summary>
    void ReduceScatter(Tensor input, Tensor output);

    /// <summary>tensor = op over ranks of tensor, in place (fp32).</summary>
    void AllReduce(Tensor tensor, ReduceOp op);

    /// <summary>Every rank's tensor becomes rank <paramref name="root"/>'s (bf16 or fp32).</summary>
    void Broadcast(Tensor tensor, int root);

    void Barrier();
}

/// <summary>The argument rules every implementation enforces identically, so a single-process run fails where MPI would.</summary>
internal static class CollectiveArgs
{
    public static void Movable(Tensor t, string what)
    {
        Plain(t, what);
        if (t.dtype != ScalarType.BFloat16 && t.dtype != ScalarType.Float32)
            throw new ArgumentException($"{what}: collectives move bfloat16 or float32 tensors, got {t.dtype}");
    }

    public static void Reducible(Tensor t, string what)
    {
        Plain(t, what);
        if (t.dtype != ScalarType.Float32)
            throw new ArgumentException($"{what}: reductions are float32 only (gradients are reduced in fp32), got {t.dtype}");
    }

    public static void Gather(Tensor input, Tensor output, int world)
    {
        Movable(input, "all-gather input");
        Movable(output, "all-gather output");
        SameDtype(input, output);
        Sized(output, input.numel() * world, "all-gather output");
    }

    public static void Scatter(Tensor input, Tensor output, int world)
    {
        Reducible(input, "reduce-scatter input");
        Reducible(output, "reduce-scatter output");
        Sized(input, output.numel() * world, "reduce-scatter input");
    }

    public static void Root(int root, int world)
    {
        if (root < 0 || root >= world) throw new ArgumentOutOfRangeException(nameof(root), $"root {root} outside 0..{world - 1}");
    }

    /// <summary>MPI counts are ints; bigger messages would need chunking, which no FSDP unit of a 70B model requires.</summary>
    public static int Count(long n, string what) =>
        n <= int.MaxValue ? (int)n : throw new ArgumentException($"{what}: {n} elements exceed one MPI message ({int.MaxValue})");

    private static void Plain(Tensor t, string what)
    {
        if (t.device_type != DeviceType.CPU) throw new ArgumentException($"{what}: CPU tensors only, got {t.device}");
        if (!t.is_contiguous()) throw new ArgumentException($"{what}: tensor must be contiguous");
    }

    private static void SameDtype(Tensor a, Tensor b)
    {
        if (a.dtype != b.dtype) throw new ArgumentException($"input is {a.dtype} but output is {b.dtype}");
    }

    private static void Sized(Tensor t, long expected, string what)
    {
        if (t.numel() != expected) throw new ArgumentException($"{what} has {t.numel()} elements, expected {expected}");
    }
}
