// bflora's flip kernels for CUDA, compiled at run time with NVRTC (see CudaFlipLauncher.cs).
// The same text also compiles as plain C++ (with the prelude in the tests) so the CPU test suite runs these exact
// functions against the C# reference. Hence: no headers, no CUDA math library, no floating-point contraction
// (NVRTC gets --fmad=false), and only IEEE +, -, *, / on doubles, in the order FastMaskStream.cs uses.
// The host prepends the table BFLORA_LN_64THS (ln(k/64), k < 92, as exact hex literals) before compiling.

typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;

// Mirrors FlipKernelArgs.cs field for field (8-byte fields first, so both sides lay it out alike).
struct FlipArgs
{
    u64 src;                // address of the first source element
    u64 dst;                // address of the first destination element (may equal src)
    u64 marks;              // zero-out record: one byte per element, 1 where it dropped the element; 0 = none kept
    i64 count;              // elements
    i64 offset;             // global flat index of the first element
    double per_log_keep[2]; // fast generator: 1 / ln(1 - 0.5^n) per component, 0 for n = 0
    u32 mask[2];            // component bit masks (exp, frac); 0 = component off
    int halves[2];
    int seed[2];
    u32 first_dropped;      // zero-out: a word is dropped iff (word & abs) >= first_dropped
    int zero_out;           // 1 = apply the zero-out
    int wide;               // 1 = 32-bit words (fp32), 0 = 16-bit (bf16, fp16)
    int components;         // fast generator: how many of mask[] are walked (the active ones come first)
};

#define BFLORA_M0 0xD2511F53u
#define BFLORA_M2 0xCD9E8D57u
#define BFLORA_W0 0x9E3779B9u
#define BFLORA_W1 0xBB67AE85u
#define BFLORA_FAST_BLOCK_SHIFT 16
#define BFLORA_FAST_DOMAIN 0x666C6970u

struct Philox4 { u32 w[4]; };

__device__ __forceinline__ Philox4 bflora_philox(u32 c0, u32 c1, u32 c2, u32 c3, u32 k0, u32 k1, int rounds)
{
    for (int i = 0; i < rounds; i++)
    {
        u64 p0 = (u64)BFLORA_M0 * c0, p2 = (u64)BFLORA_M2 * c2;
        u32 n0 = (u32)(p2 >> 32) ^ c1 ^ k0, n1 = (u32)p2;
        u32 n2 = (u32)(p0 >> 32) ^ c3 ^ k1, n3 = (u32)p0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        k0 += BFLORA_W0; k1 += BFLORA_W1;
    }
    Philox4 r = { { c0, c1, c2, c3 } };
    return r;
}

__device__ __forceinline__ int bflora_rounds_for(int halves)
{
    return halves < 13 ? 10 : halves < 19 ? 12 : halves < 25 ? 16 : 30;
}

// PhiloxMask.For: the AND of n Philox words keyed by seed + j, counter = index truncated to 32 bits.
__device__ u32 bflora_philox_mask(i64 index, int halves, int seed, int wide)
{
    int rounds = bflora_rounds_for(halves), q = halves / 4, r = halves % 4;
    u32 mask = 0xFFFFFFFFu;
    for (int j = 0; j <= q; j++)
    {
        if (j == q && r == 0) break;
        int s = (int)((u32)seed + (u32)j);
        Philox4 b = bflora_philox((u32)index, 0, 0, 0, (u32)s, s < 0 ? 0xFFFFFFFFu : 0u, rounds);
        int words = j < q ? 4 : r;
        for (int k = 0; k < words; k++) mask &= b.w[k];
    }
    return wide ? mask : mask & 0xFFFFu;
}

__device__ __forceinline__ u64 bflora_double_bits(double d)
{
    union { double d; u64 u; } v;
    v.d = d;
    return v.u;
}

__device__ __forceinline__ double bflora_bits_double(u64 u)
{
    union { double d; u64 u; } v;
    v.u = u;
    return v.d;
}

// FastMaskStream.Log, operation for operation.
__device__ double bflora_log(double u)
{
    u64 bits = bflora_double_bits(u);
    int e = (int)(i64)(bits >> 52) - 1023, shift = 0;
    if (e == -1023)
    {
        bits = bflora_double_bits(u * 18014398509481984.0);
        e = (int)(i64)(bits >> 52) - 1023;
        shift = 54;
    }
    double m = bflora_bits_double((bits & 0x000FFFFFFFFFFFFFull) | 0x3FF0000000000000ull);
    if (m > 1.4142135623730951) { m *= 0.5; e++; }
    e -= shift;
    int k = (int)(m * 64 + 0.5);
    double c = k / 64.0;
    double s = (m - c) / (m + c), s2 = s * s;
    double series = 1.0 + s2 * (1.0 / 3 + s2 * (1.0 / 5 + s2 * (1.0 / 7)));
    return e * 0.6931471805599453094 + BFLORA_LN_64THS[k] + 2 * s * series;
}

// floor for x >= 0 (or -0) without the math library: below 2^52 truncation is floor, above it x is integral.
__device__ __forceinline__ double bflora_floor_nonnegative(double x)
{
    return x < 4503599627370496.0 ? (double)(i64)x : x;
}

__device__ __forceinline__ double bflora_uniform(u32 hi, u32 lo)
{
    return (double)((((u64)hi << 21) | (lo >> 11)) + 1) * (1.0 / 9007199254740992.0);
}

__device__ __forceinline__ void bflora_xor_word(const FlipArgs& a, i64 local, u32 bits)
{
    if (a.wide)
    {
        atomicXor((u32*)(a.dst) + local, bits);
        return;
    }
    // A 16-bit word is XORed through the aligned 32-bit word holding it (the other half gets XOR 0).
    u64 at = a.dst + (u64)local * 2;
    atomicXor((u32*)(at & ~3ull), (at & 2) ? bits << 16 : bits);
}

// Fast generator: thread t walks component t / blocks of fixed block firstBlock + t % blocks, and XORs its flipped
// bits into dst, which already holds the source. Components share elements, hence the atomic XOR.
extern "C" __global__ void bflora_flip_fast(FlipArgs a)
{
    i64 first_block = a.offset >> BFLORA_FAST_BLOCK_SHIFT;
    i64 blocks = ((a.offset + a.count - 1) >> BFLORA_FAST_BLOCK_SHIFT) - first_block + 1;
    i64 stride = (i64)blockDim.x * gridDim.x;
    for (i64 t = (i64)blockIdx.x * blockDim.x + threadIdx.x; t < blocks * a.components; t += stride)
    {
        int component = (int)(t / blocks);
        i64 block = first_block + t % blocks;
        u32 mask = a.mask[component];
        int positions[32], bit_count = 0;
        for (int b = 0; b < 32; b++) if ((mask >> b) & 1u) positions[bit_count++] = b;

        u32 k0 = (u32)a.seed[component], k1 = (u32)block, block_high = (u32)(block >> 32), draw = 0;
        double per_log_keep = a.per_log_keep[component];
        i64 bit_space = ((i64)1 << BFLORA_FAST_BLOCK_SHIFT) * bit_count, position = -1;
        i64 skip = a.offset - (block << BFLORA_FAST_BLOCK_SHIFT);
        double spare = 0;
        int has_spare = 0;
        while (position < bit_space)
        {
            double u;
            if (has_spare) { u = spare; has_spare = 0; }
            else
            {
                Philox4 w = bflora_philox(draw, block_high, mask, BFLORA_FAST_DOMAIN, k0, k1, 10);
                draw++;
                spare = bflora_uniform(w.w[2], w.w[3]);
                has_spare = 1;
                u = bflora_uniform(w.w[0], w.w[1]);
            }
            double gap = bflora_floor_nonnegative(bflora_log(u) * per_log_keep);
            if (gap >= (double)(bit_space - position)) break;
            position += 1 + (i64)gap;
            if (position >= bit_space) break;
            int bit_index = (int)position;
            i64 local = bit_index / bit_count - skip;
            if (local < 0) continue;
            if (local >= a.count) break;
            bflora_xor_word(a, local, 1u << positions[bit_index % bit_count]);
        }
    }
}

// Philox generator: each element's masks from its own counter; then the zero-out. dst may be src.
extern "C" __global__ void bflora_flip_philox(FlipArgs a)
{
    u32 abs_bits = a.wide ? 0x7FFFFFFFu : 0x7FFFu;
    i64 stride = (i64)blockDim.x * gridDim.x;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < a.count; i += stride)
    {
        u32 word = a.wide ? ((const u32*)a.src)[i] : ((const unsigned short*)a.src)[i];
        for (int c = 0; c < 2; c++)
            if (a.mask[c] != 0) word ^= bflora_philox_mask(a.offset + i, a.halves[c], a.seed[c], a.wide) & a.mask[c];
        int dropped = a.zero_out && (word & abs_bits) >= a.first_dropped;
        if (dropped) word = 0;
        if (a.marks) ((unsigned char*)a.marks)[i] = (unsigned char)dropped;
        if (a.wide) ((u32*)a.dst)[i] = word;
        else ((unsigned short*)a.dst)[i] = (unsigned short)word;
    }
}

// The zero-out alone, in place on dst (after the fast generator's XOR), recording the drops when marks is set.
extern "C" __global__ void bflora_zero_out(FlipArgs a)
{
    u32 abs_bits = a.wide ? 0x7FFFFFFFu : 0x7FFFu;
    i64 stride = (i64)blockDim.x * gridDim.x;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < a.count; i += stride)
    {
        u32 word = a.wide ? ((const u32*)a.dst)[i] : ((const unsigned short*)a.dst)[i];
        int dropped = (word & abs_bits) >= a.first_dropped;
        if (dropped)
        {
            if (a.wide) ((u32*)a.dst)[i] = 0;
            else ((unsigned short*)a.dst)[i] = 0;
        }
        if (a.marks) ((unsigned char*)a.marks)[i] = (unsigned char)dropped;
    }
}

// ---- The LoRA backward's correction for a dropped weight (LoraFlipFunction.Correct, without an index list) ----
// The flip's straight-through mask gives a dropped W_f[o, i] no gradient, so what the plain LoRA gradients got
// through it is taken back: G = sum_m g[m, o] * x_f[m, i], dB[o, :] -= s * G * A[:, i], dA[:, i] -= s * G * B[o, :].
// Working from the zero-out's marks rather than an index list means the host never waits to learn how many fired.

// Mirrors LoraCorrectionArgs (FlipKernelArgs.cs) field for field.
struct CorrectArgs
{
    u64 marks;              // one byte per element of W [out, in], 1 where the weight flip dropped it
    u64 g;                  // output gradient [tokens, out], contiguous
    u64 x;                  // flipped input [tokens, in], contiguous
    u64 a;                  // LoRA A [rank, in]
    u64 b;                  // LoRA B [out, rank]
    u64 grad_a;             // float [rank, in]: the plain dA, corrected in place
    u64 grad_b;             // float [out, rank]: the plain dB, corrected in place
    i64 tokens;
    i64 out_features;
    i64 in_features;
    float minus_scaling;    // -s
    int rank;
    int format;             // of g, x, A and B: 0 = bf16, 1 = fp32, 2 = fp16
    int chunk;              // tokens per thread
    int chunks;             // ceil(tokens / chunk)
};

#define BFLORA_MARK_GROUP 64

__device__ __forceinline__ float bflora_bits_float(u32 u)
{
    union { float f; u32 u; } v;
    v.u = u;
    return v.f;
}

// IEEE half to float, exactly (subnormals are man * 2^-24).
__device__ __forceinline__ float bflora_half_float(u32 h)
{
    u32 sign = (h & 0x8000u) << 16, exponent = (h >> 10) & 0x1Fu, man = h & 0x3FFu;
    if (exponent == 0x1Fu) return bflora_bits_float(sign | 0x7F800000u | (man << 13));
    if (exponent != 0) return bflora_bits_float(sign | ((exponent + 112u) << 23) | (man << 13));
    float f = (float)man * 5.9604644775390625e-8f;
    return sign ? -f : f;
}

__device__ __forceinline__ float bflora_load(u64 base, i64 i, int format)
{
    if (format == 1) return ((const float*)base)[i];
    u32 h = ((const unsigned short*)base)[i];
    return format == 0 ? bflora_bits_float(h << 16) : bflora_half_float(h);
}

// Thread t scans the marks of group t / chunks (64 elements, read 8 at a time) and, for each dropped element, adds
// its share of the correction from tokens [chunk * (t % chunks), +chunk): drops are few, so most threads only scan,
// and the tokens of one drop are spread over many threads. The shares meet in the gradients by atomic addition.
extern "C" __global__ void bflora_lora_correct(CorrectArgs a)
{
    i64 count = a.out_features * a.in_features;
    i64 groups = (count + BFLORA_MARK_GROUP - 1) / BFLORA_MARK_GROUP;
    i64 stride = (i64)blockDim.x * gridDim.x;
    const unsigned char* marks = (const unsigned char*)a.marks;
    for (i64 t = (i64)blockIdx.x * blockDim.x + threadIdx.x; t < groups * a.chunks; t += stride)
    {
        i64 first = t / a.chunks * BFLORA_MARK_GROUP;
        i64 m0 = t % a.chunks * a.chunk, m1 = m0 + a.chunk < a.tokens ? m0 + a.chunk : a.tokens;
        for (i64 e0 = first; e0 < first + BFLORA_MARK_GROUP && e0 < count; e0 += 8)
        {
            // Marks come from a fresh allocation (aligned), so whole 8-byte words hold 8 marks.
            if (e0 + 8 <= count && ((const u64*)marks)[e0 / 8] == 0) continue;
            for (i64 e = e0; e < e0 + 8 && e < count; e++)
            {
                if (!marks[e]) continue;
                i64 o = e / a.in_features, i = e % a.in_features;
                float dot = 0;
                for (i64 m = m0; m < m1; m++)
                    dot += bflora_load(a.g, m * a.out_features + o, a.format) * bflora_load(a.x, m * a.in_features + i, a.format);
                float sg = dot * a.minus_scaling;
                for (int j = 0; j < a.rank; j++)
                {
                    atomicAdd((float*)a.grad_b + o * a.rank + j, bflora_load(a.a, (i64)j * a.in_features + i, a.format) * sg);
                    atomicAdd((float*)a.grad_a + (i64)j * a.in_features + i, bflora_load(a.b, o * a.rank + j, a.format) * sg);
                }
            }
        }
    }
}
