using Bflora.Data;
using TorchSharp;
using Xunit;

namespace Bflora.Tests.Data;

public sealed class BatchesTests
{
    private static readonly ByteTokenizer Bytes = new();

    private static WindowReader Reader(string path) => new(new TextSource(path), Bytes, seqLen: 6, cycle: true);

    private static TempDir Dataset()
    {
        var dir = new TempDir();
        dir.Write("a.txt", string.Concat(Enumerable.Range(0, 40).Select(i => $"line {i}\n")));
        return dir;
    }

    /// <summary>Every (step, micro, rank) micro-batch's windows, flattened in (step, micro, rank) order.</summary>
    private static List<long[]> TrainingOrder(string path, BatchLayout layout, int steps)
    {
        var reader = Reader(path);
        var rows = new List<long[]>();
        for (int step = 0; step < steps; step++)
        {
            var global = Batches.ReadGlobalBatch(reader, layout);
            for (int micro = 0; micro < layout.Accumulation; micro++)
            for (int rank = 0; rank < layout.World; rank++)
            {
                var (inputs, labels) = Batches.MicroBatch(global, layout, micro, rank);
                Assert.Equal(torch.ScalarType.Int64, inputs.dtype);
                Assert.Equal([layout.LocalBatch, 6L], inputs.shape);
                Assert.Equal(inputs.shape, labels.shape);
                var x = inputs.data<long>().ToArray();
                var y = labels.data<long>().ToArray();
                for (int b = 0; b < layout.LocalBatch; b++)
                    rows.Add([.. x.AsSpan(b * 6, 6), y[b * 6 + 5]]);
            }
        }
        return rows;
    }

    [Fact]
    public void WorldOneWithAccumulationTwoSeesWhatWorldTwoWithAccumulationOneSees()
    {
        using var dir = Dataset();
        var single = TrainingOrder(dir.Path, new BatchLayout(LocalBatch: 2, Accumulation: 2, World: 1), steps: 3);
        var pair = TrainingOrder(dir.Path, new BatchLayout(LocalBatch: 2, Accumulation: 1, World: 2), steps: 3);
        Assert.Equal(12, single.Count);
        Assert.Equal(single, pair);
    }

    [Fact]
    public void MicroBatchSliceFollowsTheRule()
    {
        var layout = new BatchLayout(LocalBatch: 3, Accumulation: 2, World: 4);
        Assert.Equal(24, layout.GlobalBatch);
        Assert.Equal((1 * 4 + 2) * 3, layout.SliceStart(micro: 1, rank: 2));
        Assert.Equal(5 * 24 + 18, layout.FirstWindow(step: 5, micro: 1, rank: 2));
        Assert.Throws<ArgumentOutOfRangeException>(() => layout.SliceStart(2, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => layout.SliceStart(0, 4));
    }

    [Fact]
    public void InputsAndLabelsAreTheWindowShiftedByOne()
    {
        using var dir = Dataset();
        var layout = new BatchLayout(2, 1, 1);
        var global = Batches.ReadGlobalBatch(Reader(dir.Path), layout);
        var (inputs, labels) = Batches.MicroBatch(global, layout, 0, 0);
        Assert.Equal(global[1][..^1].Select(i => (long)i), inputs[1].data<long>().ToArray());
        Assert.Equal(global[1][1..].Select(i => (long)i), labels[1].data<long>().ToArray());
        Assert.Equal(256L, inputs[0, 0].item<long>());
    }
}
