using Bflora.Bitflip;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Bflora.Tests.Bitflip;

/// <summary>The fast kernels must equal the element-by-element reference bit for bit, however the work is split.</summary>
public class FlipKernelTests
{
    internal static uint[] RandomWords(FlipFormat fmt, int count, int seed) => FlipSelfTest.RandomWords(fmt, count, seed);

    static FlipOp Op(FlipRng rng, bool zeroOut) => new(3, 5, 1234, 1235, zeroOut ? 1.5 : null, rng);

    public static IEnumerable<object[]> Cases()
    {
        foreach (var rng in new[] { FlipRng.Fast, FlipRng.Philox })
        foreach (var fmt in new[] { FlipFormat.BFloat16, FlipFormat.Float16, FlipFormat.Float32 })
        foreach (var size in new[] { 1, 7, 4097, 70001, 200003 })
            yield return new object[] { rng, fmt, size };
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Kernel_equals_reference_for_any_thread_count(FlipRng rng, FlipFormat fmt, int size)
    {
        using var scope = torch.NewDisposeScope();
        var words = RandomWords(fmt, size, size);
        var x = TensorBits.FromWords(words, new long[] { size }, fmt);
        foreach (bool zeroOut in new[] { false, true })
        {
            var expected = ReferenceFlip.Apply(words, fmt, Op(rng, zeroOut));
            foreach (int threads in new[] { 1, 2, 3 })
                Assert.Equal(expected, TensorBits.ReadWords(BitFlip.Flip(x, Op(rng, zeroOut), maxThreads: threads)));
        }
    }

    /// <summary>Overlapping seed ranges (shared Philox blocks), unequal round counts, and seeds wrapping past 2^31.</summary>
    [Theory]
    [InlineData(16, 16, 100, 101, FlipFormat.BFloat16)]
    [InlineData(12, 13, 100, 102, FlipFormat.Float16)]
    [InlineData(7, 16, 101, 100, FlipFormat.Float32)]
    [InlineData(16, 16, int.MaxValue - 1, int.MaxValue, FlipFormat.BFloat16)]
    [InlineData(4, 0, -3, -2, FlipFormat.Float32)]
    [InlineData(16, 14, int.MaxValue - 1, int.MinValue + 1, FlipFormat.Float16)]
    [InlineData(16, 16, 100, 1_000_000_000, FlipFormat.BFloat16)]
    [InlineData(13, null, 5, 6, FlipFormat.BFloat16)]
    [InlineData(null, 2, 5, 6, FlipFormat.Float32)]
    public void Philox_kernel_equals_reference_for_seed_overlap_rounds_and_wrap(int? ne, int? nf, int seedE, int seedF, FlipFormat fmt)
    {
        using var scope = torch.NewDisposeScope();
        var words = RandomWords(fmt, 5000, 8);
        var x = TensorBits.FromWords(words, new long[] { 5000 }, fmt);
        var op = new FlipOp(ne, nf, seedE, seedF, null, FlipRng.Philox);
        var expected = ReferenceFlip.Apply(words, fmt, op);
        Assert.Equal(expected, TensorBits.ReadWords(BitFlip.Flip(x, op)));
        Assert.NotEqual(words, expected);
    }

    [Theory]
    [InlineData(FlipRng.Fast, FlipFormat.BFloat16)]
    [InlineData(FlipRng.Philox, FlipFormat.BFloat16)]
    [InlineData(FlipRng.Fast, FlipFormat.Float32)]
    [InlineData(FlipRng.Philox, FlipFormat.Float16)]
    public void Non_contiguous_input_flips_in_row_major_order(FlipRng rng, FlipFormat fmt)
    {
        using var scope = torch.NewDisposeScope();
        var x = TensorBits.FromWords(RandomWords(fmt, 300 * 500, 9), new long[] { 300, 500 }, fmt).t();
        Assert.False(x.is_contiguous());
        var expected = ReferenceFlip.Flip(x, Op(rng, true));
        Assert.Equal(TensorBits.ReadWords(expected), TensorBits.ReadWords(BitFlip.Flip(x, Op(rng, true))));
    }

    [Theory]
    [InlineData(FlipRng.Fast, 70001, 90000)]
    [InlineData(FlipRng.Fast, 0, 65536)]
    [InlineData(FlipRng.Fast, 131071, 200003)]
    [InlineData(FlipRng.Philox, 70001, 90000)]
    [InlineData(FlipRng.Philox, 5, 199999)]
    public void Shard_with_index_offset_equals_slice_of_whole_flip(FlipRng rng, int start, int end)
    {
        using var scope = torch.NewDisposeScope();
        var fmt = FlipFormat.BFloat16;
        var x = TensorBits.FromWords(RandomWords(fmt, 200003, 3), new long[] { 200003 }, fmt);
        var whole = TensorBits.ReadWords(BitFlip.Flip(x, Op(rng, true)));
        var shard = BitFlip.Flip(x.slice(0, start, end, 1), Op(rng, true), indexOffset: start, maxThreads: 2);
        Assert.Equal(whole[start..end], TensorBits.ReadWords(shard));
        Assert.Equal(whole[start..end], ReferenceFlip.Apply(TensorBits.ReadWords(x)[start..end], fmt, Op(rng, true), start));
    }

    [Fact]
    public void Kernel_without_avx512_equals_reference()
    {
        using var scope = torch.NewDisposeScope();
        FlipKernels.AllowVector512 = false;
        try
        {
            foreach (var rng in new[] { FlipRng.Fast, FlipRng.Philox })
            foreach (var fmt in new[] { FlipFormat.BFloat16, FlipFormat.Float32 })
            {
                var words = RandomWords(fmt, 20001, 12);
                var x = TensorBits.FromWords(words, new long[] { 20001 }, fmt);
                Assert.Equal(ReferenceFlip.Apply(words, fmt, Op(rng, true)), TensorBits.ReadWords(BitFlip.Flip(x, Op(rng, true))));
            }
        }
        finally
        {
            FlipKernels.AllowVector512 = true;
        }
    }

    [Fact]
    public void Flip_into_reused_buffer_and_in_place_match_out_of_place()
    {
        using var scope = torch.NewDisposeScope();
        var fmt = FlipFormat.BFloat16;
        var x = TensorBits.FromWords(RandomWords(fmt, 5000, 4), new long[] { 50, 100 }, fmt);
        var op = Op(FlipRng.Fast, true);
        var expected = TensorBits.ReadWords(BitFlip.Flip(x, op));
        var buffer = torch.empty(new long[] { 50, 100 }, ScalarType.BFloat16);
        BitFlip.FlipInto(x, buffer, op);
        Assert.Equal(expected, TensorBits.ReadWords(buffer));
        var copy = x.clone();
        BitFlip.FlipInto(copy, copy, op);
        Assert.Equal(expected, TensorBits.ReadWords(copy));
        Assert.Throws<ArgumentException>(() => BitFlip.FlipInto(x, torch.empty(5000, ScalarType.BFloat16), op));
        Assert.Throws<ArgumentException>(() => BitFlip.Flip(torch.zeros(3, ScalarType.Float64), op));
    }

    [Theory]
    [InlineData(FlipRng.Fast)]
    [InlineData(FlipRng.Philox)]
    public void Everything_off_is_identity(FlipRng rng)
    {
        using var scope = torch.NewDisposeScope();
        var words = RandomWords(FlipFormat.Float32, 1000, 5);
        var x = TensorBits.FromWords(words, new long[] { 1000 }, FlipFormat.Float32);
        var off = new FlipOp(null, null, 1, 2, null, rng);
        Assert.True(off.IsIdentity);
        Assert.Equal(words, TensorBits.ReadWords(BitFlip.Flip(x, off)));
        Assert.Equal(words, ReferenceFlip.Apply(words, FlipFormat.Float32, off));
    }
}
