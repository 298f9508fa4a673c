using TorchSharp;
using static TorchSharp.torch;

namespace Bflora.Data;

/// <summary>Turns windows into the model's int64 (inputs, labels) pair, shifted by one as a causal LM expects.</summary>
public static class Batches
{
    /// <summary>
    /// Reads one step's global batch from <paramref name="reader"/>. Every rank reads (and tokenizes) the whole global
    /// batch and keeps its slices, so no rank needs to know where another stands in the stream.
    /// </summary>
    public static int[][] ReadGlobalBatch(WindowReader reader, BatchLayout layout)
    {
        var windows = new int[layout.GlobalBatch][];
        for (int i = 0; i < windows.Length; i++)
        {
            if (!reader.TryNext(out windows[i]))
                throw new InvalidDataException($"the data ran out after {i} of the {windows.Length} windows of a global batch");
        }
        return windows;
    }

    /// <summary>
    /// Micro-batch <paramref name="micro"/> of <paramref name="rank"/>: inputs = window[:-1], labels = window[1:], both
    /// [b, seq_len], on <paramref name="device"/> (default CPU).
    /// </summary>
    public static (Tensor Inputs, Tensor Labels) MicroBatch(int[][] globalBatch, BatchLayout layout, int micro, int rank,
        Device? device = null)
    {
        if (globalBatch.Length != layout.GlobalBatch)
            throw new ArgumentException($"global batch has {globalBatch.Length} windows, the layout needs {layout.GlobalBatch}");
        return ToTensors(globalBatch.AsSpan(layout.SliceStart(micro, rank), layout.LocalBatch), device);
    }

    /// <summary>The (inputs, labels) pair of these windows, on <paramref name="device"/> (default CPU).</summary>
    public static (Tensor Inputs, Tensor Labels) ToTensors(ReadOnlySpan<int[]> windows, Device? device = null)
    {
        if (windows.Length == 0)
            throw new ArgumentException("no windows to batch");
        int seqLen = windows[0].Length - 1;
        var inputs = new long[windows.Length * seqLen];
        var labels = new long[windows.Length * seqLen];
        for (int row = 0; row < windows.Length; row++)
        {
            var window = windows[row];
            if (window.Length != seqLen + 1)
                throw new ArgumentException($"window {row} has {window.Length} ids, expected {seqLen + 1}");
            for (int t = 0; t < seqLen; t++)
            {
                inputs[row * seqLen + t] = window[t];
                labels[row * seqLen + t] = window[t + 1];
            }
        }
        long[] shape = [windows.Length, seqLen];
        return (torch.tensor(inputs, shape, ScalarType.Int64, device), torch.tensor(labels, shape, ScalarType.Int64, device));
    }
}
