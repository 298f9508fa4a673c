using static TorchSharp.torch;

namespace Bflora.Bitflip;

/// <summary>
/// The flip written element by element, with no cleverness: the yardstick the fast kernels are tested against.
/// </summary>
public static class ReferenceFlip
{
    /// <summary>Flips a tensor (any layout) and returns a new contiguous one; indices start at indexOffset.</summary>
    public static Tensor Flip(Tensor x, FlipOp op, long indexOffset = 0)
    {
        var fmt = FlipFormats.Of(x.dtype);
        return TensorBits.FromWords(Apply(TensorBits.ReadWords(x), fmt, op, indexOffset), x.shape, fmt);
    }

    /// <summary>Flips flat words whose first element has global index indexOffset.</summary>
    public static uint[] Apply(uint[] words, FlipFormat fmt, FlipOp op, long indexOffset = 0)
    {
        uint expBits = FlipFormats.ExpMask(fmt), fracBits = FlipFormats.FracMask(fmt);
        uint[]? exp = op.ExpHalves is int ne ? Masks(op.Rng, fmt, expBits, ne, op.SeedExp, indexOffset, words.Length) : null;
        uint[]? frac = op.FracHalves is int nf ? Masks(op.Rng, fmt, fracBits, nf, op.SeedFrac, indexOffset, words.Length) : null;
        var result = new uint[words.Length];
        for (int i = 0; i < words.Length; i++)
        {
            uint u = words[i];
            if (exp != null) u ^= exp[i] & expBits;
            if (frac != null) u ^= frac[i] & fracBits;
            if (op.ZeroOutThreshold is float t && !(Math.Abs(FlipFormats.ToSingle(fmt, u)) < t)) u = 0;
            result[i] = u;
        }
        return result;
    }

    /// <summary>Random masks of one component for elements [start, start+count).</summary>
    public static uint[] Masks(FlipRng rng, FlipFormat fmt, uint componentMask, int halves, int seed, long start, int count)
    {
        int wordBits = FlipFormats.WordBits(fmt);
        var masks = new uint[count];
        if (rng == FlipRng.Philox)
        {
            for (int i = 0; i < count; i++) masks[i] = PhiloxMask.For(start + i, halves, seed, wordBits);
            return masks;
        }
        if (count == 0) return masks;
        // Fast generator: walk every block the range touches from its first bit, keep the hits inside the range.
        int[] positions = FastMaskStream.BitPositions(componentMask);
        long firstBlock = start >> FastMaskStream.BlockShift, lastBlock = (start + count - 1) >> FastMaskStream.BlockShift;
        for (long b = firstBlock; b <= lastBlock; b++)
        {
            var walker = new FastMaskStream.Walker(seed, b, componentMask, halves, positions.Length);
            for (long k = walker.Next(); k >= 0; k = walker.Next())
            {
                long element = b * FastMaskStream.BlockElements + k / positions.Length;
                if (element >= start && element < start + count)
                    masks[element - start] |= 1u << positions[k % positions.Length];
            }
        }
        return masks;
    }
}
