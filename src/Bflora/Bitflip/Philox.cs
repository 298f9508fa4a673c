using System.Runtime.CompilerServices;

namespace Bflora.Bitflip;

/// <summary>Philox4x32 (Random123), the generator of the original Triton kernel.</summary>
public static class Philox
{
    public const uint M0 = 0xD2511F53u, M2 = 0xCD9E8D57u;
    public const uint W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;

    /// <summary>Round count the original chooses from the halves n (more rounds for rarer flips).</summary>
    public static int RoundsFor(int halves) => halves < 13 ? 10 : halves < 19 ? 12 : halves < 25 ? 16 : 30;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static (uint, uint, uint, uint) Block(uint c0, uint c1, uint c2, uint c3, uint k0, uint k1, int rounds)
    {
        for (int i = 0; i < rounds; i++)
        {
            ulong p0 = (ulong)M0 * c0, p2 = (ulong)M2 * c2;
            uint n0 = (uint)(p2 >> 32) ^ c1 ^ k0, n1 = (uint)p2;
            uint n2 = (uint)(p0 >> 32) ^ c3 ^ k1, n3 = (uint)p0;
            c0 = n0; c1 = n1; c2 = n2; c3 = n3;
            k0 += W0; k1 += W1;
        }
        return (c0, c1, c2, c3);
    }

    /// <summary>Key of a 32-bit signed seed: sign-extended to 64 bits and split, as Triton passes it.</summary>
    public static (uint K0, uint K1) Key(int seed) => ((uint)seed, seed < 0 ? 0xFFFFFFFFu : 0u);
}
