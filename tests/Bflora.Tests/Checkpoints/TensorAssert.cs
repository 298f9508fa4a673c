using Xunit;
using static TorchSharp.torch;

namespace Bflora.Tests.Checkpoints;

internal static class TensorAssert
{
    /// <summary>Same dtype, same shape, bit-for-bit the same values (TorchSharp's <c>equal</c> is elementwise).</summary>
    public static void Identical(Tensor expected, Tensor actual, string? what = null)
    {
        Assert.True(expected.dtype == actual.dtype, $"{what}: dtype {actual.dtype}, expected {expected.dtype}");
        Assert.Equal(expected.shape, actual.shape);
        using var same = expected.eq(actual).all();
        Assert.True(same.item<bool>(), $"{what}: values differ");
    }
}
