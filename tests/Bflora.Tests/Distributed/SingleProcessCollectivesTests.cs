using Bflora.Distributed;
using Xunit;
using static TorchSharp.torch;

namespace Bflora.Tests.Distributed;

public class SingleProcessCollectivesTests
{
    private readonly SingleProcessCollectives _c = new();

    [Fact]
    public void World_one_collectives_are_copies_or_identities()
    {
        using var input = arange(6, ScalarType.Float32);
        using var output = zeros(6, ScalarType.Float32);
        _c.AllGather(input, output);
        Assert.True(output.eq(input).all().item<bool>());

        using var scattered = zeros(6, ScalarType.Float32);
        _c.ReduceScatter(input, scattered);
        Assert.True(scattered.eq(input).all().item<bool>());

        using var reduced = input.clone();
        _c.AllReduce(reduced, ReduceOp.Sum);
        _c.AllReduce(reduced, ReduceOp.Max);
        Assert.True(reduced.eq(input).all().item<bool>());

        using var bf = arange(4, ScalarType.BFloat16);
        using var bfOut = zeros(4, ScalarType.BFloat16);
        _c.StartAllGather(bf, bfOut).Wait();
        Assert.True(bfOut.eq(bf).all().item<bool>());
        _c.Broadcast(bf, 0);
        _c.Barrier();
        Assert.Equal((0, 1), (_c.Rank, _c.WorldSize));
    }

    [Fact]
    public void Gathering_into_the_same_memory_leaves_it_intact()
    {
        using var buffer = arange(5, ScalarType.Float32);
        using var view = buffer.view(5);
        _c.AllGather(buffer, view);
        Assert.Equal(new float[] { 0, 1, 2, 3, 4 }, buffer.data<float>().ToArray());
    }

    [Fact]
    public void Arguments_are_checked_as_under_MPI()
    {
        using var f = zeros(4, ScalarType.Float32);
        using var bf = zeros(4, ScalarType.BFloat16);
        using var wrongSize = zeros(3, ScalarType.Float32);
        using var ints = zeros(4, ScalarType.Int32);
        using var strided = zeros(4, 2, ScalarType.Float32).t();
        Assert.Throws<ArgumentException>(() => _c.AllReduce(bf, ReduceOp.Sum));        // bf16 is never reduced
        Assert.Throws<ArgumentException>(() => _c.ReduceScatter(bf, bf));
        Assert.Throws<ArgumentException>(() => _c.AllGather(f, bf));                   // dtypes differ
        Assert.Throws<ArgumentException>(() => _c.AllGather(f, wrongSize));
        Assert.Throws<ArgumentException>(() => _c.Broadcast(ints, 0));
        Assert.Throws<ArgumentException>(() => _c.AllReduce(strided, ReduceOp.Max));   // not contiguous
        Assert.Throws<ArgumentOutOfRangeException>(() => _c.Broadcast(f, 1));
    }

    [Fact]
    public void The_self_test_passes_in_one_process_against_the_reference_twin()
    {
        var log = new StringWriter();
        Assert.True(CollectivesSelfTest.Run(_c, log), log.ToString());
        Assert.Contains("rank 0 PASS reduce_scatter_sum Float32", log.ToString());
    }

    [Fact]
    public void Reference_twin_reduces_like_the_implementation()
    {
        var reference = new ReferenceCollectives(_c);
        using var input = tensor(new float[] { 1.5f, -2f, 3.25f, 7f });
        using var a = zeros(4, ScalarType.Float32);
        using var b = zeros(4, ScalarType.Float32);
        _c.ReduceScatter(input, a);
        reference.ReduceScatter(input, b);
        Assert.Equal(a.data<float>().ToArray(), b.data<float>().ToArray());
    }

    [Fact]
    public void Launch_info_comes_from_mpiruns_environment_and_sets_threads_per_rank()
    {
        var none = LaunchInfo.Read(_ => null);
        Assert.Equal((1, 0, false), (none.WorldSize, none.Rank, none.UnderMpirun));

        var vars = new Dictionary<string, string>
        {
            ["OMPI_COMM_WORLD_SIZE"] = "8", ["OMPI_COMM_WORLD_RANK"] = "5",
            ["OMPI_COMM_WORLD_LOCAL_SIZE"] = "4", ["OMPI_COMM_WORLD_LOCAL_RANK"] = "1",
        };
        var launch = LaunchInfo.Read(k => vars.GetValueOrDefault(k));
        Assert.Equal(new LaunchInfo(8, 5, 4, 1, true), launch);
        Assert.Equal(4, launch.ThreadsPerRank(nodeCores: 16, allowedCores: 16));  // 16 cores ÷ 4 ranks on the node
        Assert.Equal(1, launch.ThreadsPerRank(nodeCores: 16, allowedCores: 1));   // bound to one core
        Assert.Equal(1, launch.ThreadsPerRank(nodeCores: 2, allowedCores: 2));    // never 0
    }
}
