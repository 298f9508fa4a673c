namespace Bflora.Bitflip;

/// <summary>The original kernel's random mask for one element (SEMANTICS.md §1).</summary>
public static class PhiloxMask
{
    /// <summary>
    /// AND of all four words of Philox(seed+j) for j &lt; n/4, then the first n%4 words of Philox(seed+n/4);
    /// the counter is the flat element index truncated to 32 bits. Words are cut to 16 bits for 16-bit formats.
    /// </summary>
    public static uint For(long index, int halves, int seed, int wordBits)
    {
        int rounds = Philox.RoundsFor(halves);
        uint mask = 0xFFFFFFFFu;
        int q = halves / 4, r = halves % 4;
        for (int j = 0; j < q; j++)
        {
            var (k0, k1) = Philox.Key(unchecked(seed + j));
            var (w0, w1, w2, w3) = Philox.Block((uint)index, 0, 0, 0, k0, k1, rounds);
            mask &= w0 & w1 & w2 & w3;
        }
        if (r > 0)
        {
            var (k0, k1) = Philox.Key(unchecked(seed + q));
            var (w0, w1, w2, _) = Philox.Block((uint)index, 0, 0, 0, k0, k1, rounds);
            mask &= w0;
            if (r > 1) mask &= w1;
            if (r > 2) mask &= w2;
        }
        return wordBits == 16 ? mask & 0xFFFFu : mask;
    }
}
