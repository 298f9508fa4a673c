using System.Diagnostics;
using static TorchSharp.torch;

namespace Bflora.Distributed;

/// <summary>
/// Exercises every collective on both dtypes with rank-dependent values whose results are known in closed form, and
/// holds the implementation to its <see cref="ReferenceCollectives"/> twin bit for bit. Prints one
/// "rank R PASS|FAIL name dtype" line per check. Run under mpirun by the tests (hidden command `bflora selftest-mpi`).
/// Values are small integers, exact in bf16 and in fp32 sums, so any summation order gives the same bits.
/// </summary>
public static class CollectivesSelfTest
{
    public static bool Run(ICollectives c, TextWriter log)
    {
        var reference = new ReferenceCollectives(c);
        bool ok = true;
        void Report(string name, ScalarType dtype, bool pass)
        {
            log.WriteLine($"rank {c.Rank} {(pass ? "PASS" : "FAIL")} {name} {dtype}");
            ok &= pass;
        }

        int w = c.WorldSize, r = c.Rank;
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
        {
            // 5 elements per rank: an odd count catches wrong offsets between chunks.
            using var input = Values(5, i => 100 * r + i, dtype);
            using var expected = Values(5 * w, j => 100 * (j / 5) + j % 5, dtype);
            Report("all_gather", dtype, Both(expected, o => c.AllGather(input, o), o => reference.AllGather(input, o)));
            Report("start_all_gather", dtype, Both(expected, o => c.StartAllGather(input, o).Wait(), o => reference.AllGather(input, o)));
            Report("two_gathers_in_flight", dtype, TwoInFlight(c, input, expected));

            int root = w - 1;
            using var bexpected = Values(7, i => 3 * root + i, dtype);
            using var btensor = Values(7, i => 3 * r + i, dtype);
            c.Broadcast(btensor, root);
            Report("broadcast", dtype, Same(btensor, bexpected));
        }

        var f32 = ScalarType.Float32;
        // Rank r contributes (r + 1)·(j + 1) at global index j, so the sum is (j + 1)·w(w + 1)/2.
        using (var input = Values(3 * w, j => (r + 1) * (j + 1), f32))
        using (var expected = Values(3, i => (3 * r + i + 1) * w * (w + 1) / 2, f32))
            Report("reduce_scatter_sum", f32, Both(expected, o => c.ReduceScatter(input, o), o => reference.ReduceScatter(input, o)));

        using (var expected = Values(6, i => w * i + w * (w - 1) / 2, f32))
            Report("all_reduce_sum", f32, Both(expected, o => { Fill(o, i => r + i); c.AllReduce(o, ReduceOp.Sum); },
                o => { Fill(o, i => r + i); reference.AllReduce(o, ReduceOp.Sum); }));

        // Even slots grow with the rank, odd slots shrink: the max comes from the last rank, then from rank 0.
        using (var expected = Values(6, i => i % 2 == 0 ? (w - 1) * 10 + i : i, f32))
            Report("all_reduce_max", f32, Both(expected, o => { Fill(o, i => i % 2 == 0 ? r * 10 + i : i - r * 10); c.AllReduce(o, ReduceOp.Max); },
                o => { Fill(o, i => i % 2 == 0 ? r * 10 + i : i - r * 10); reference.AllReduce(o, ReduceOp.Max); }));

        using (var bf = zeros(4, ScalarType.BFloat16))
            Report("bf16_reduction_refused", ScalarType.BFloat16, Throws(() => c.AllReduce(bf, ReduceOp.Sum)));

        c.Barrier();
        Report("barrier", f32, true);
        return ok;
    }

    /// <summary>
    /// Bandwidth of a 64 MiB-class fp32 all-gather (output size) and reduce-scatter (input size), against a copy_ of
    /// the same size in one process; "GB/s" is buffer bytes / seconds, best of <paramref name="reps"/>.
    /// </summary>
    public static void Bench(ICollectives c, long mib, int reps, TextWriter log)
    {
        long n = mib * 1024 * 1024 / 4 / c.WorldSize * c.WorldSize;
        using var full = ones(n, ScalarType.Float32);
        using var part = ones(n / c.WorldSize, ScalarType.Float32);
        using var copy = zeros(n, ScalarType.Float32);
        double bytes = n * 4.0;
        double Best(Action a)
        {
            a();
            double best = double.MaxValue;
            for (int i = 0; i < reps; i++)
            {
                c.Barrier();
                var sw = Stopwatch.StartNew();
                a();
                best = Math.Min(best, sw.Elapsed.TotalSeconds);
            }
            return bytes / best / 1e9;
        }
        double gather = Best(() => c.AllGather(part, full));
        double scatter = Best(() => c.ReduceScatter(full, part));
        double memcpy = Best(() => copy.copy_(full));
        log.WriteLine($"rank {c.Rank} BENCH world {c.WorldSize} {mib} MiB fp32: all_gather {gather:F2} GB/s, " +
                      $"reduce_scatter {scatter:F2} GB/s, copy_ {memcpy:F2} GB/s");
    }

    /// <summary>Prefetch pattern: a second gather starts before the first is waited for; they finish in either order.</summary>
    private static bool TwoInFlight(ICollectives c, Tensor input, Tensor expected)
    {
        using var doubled = input.mul(2);
        using var expectedDoubled = expected.mul(2);
        using var first = zeros_like(expected);
        using var second = zeros_like(expected);
        var a = c.StartAllGather(input, first);
        var b = c.StartAllGather(doubled, second);
        b.Wait();
        a.Wait();
        a.Wait();
        return Same(first, expected) && Same(second, expectedDoubled);
    }

    private static Tensor Values(long n, Func<int, int> f, ScalarType dtype)
    {
        var t = empty(n, ScalarType.Float32);
        Fill(t, f);
        if (dtype == ScalarType.Float32) return t;
        using (t) return t.to_type(dtype);
    }

    private static void Fill(Tensor t, Func<int, int> f)
    {
        var values = new float[t.numel()];
        for (int i = 0; i < values.Length; i++) values[i] = f(i);
        using var source = tensor(values);
        t.copy_(source);
    }

    /// <summary>Runs the implementation and the reference into fresh outputs; both must equal the expected bits.</summary>
    private static bool Both(Tensor expected, Action<Tensor> impl, Action<Tensor> twin)
    {
        using var a = zeros_like(expected);
        using var b = zeros_like(expected);
        impl(a);
        twin(b);
        return Same(a, expected) && Same(b, expected);
    }

    private static bool Same(Tensor a, Tensor b)
    {
        if (a.dtype != b.dtype || !a.shape.SequenceEqual(b.shape)) return false;
        using var eq = a.eq(b);
        using var all = eq.all();
        return all.item<bool>();
    }

    private static bool Throws(Action a)
    {
        try { a(); return false; }
        catch (ArgumentException) { return true; }
    }
}
