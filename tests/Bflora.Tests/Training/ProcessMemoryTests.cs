using Bflora.Training;
using Xunit;
using static TorchSharp.torch;

namespace Bflora.Tests.Training;

/// <summary>Alone, so other tests' allocations and frees cannot move the resident set while it is read.</summary>
[CollectionDefinition(nameof(ProcessMemoryTests), DisableParallelization = true)]
public class ProcessMemoryCollection;

[Collection(nameof(ProcessMemoryTests))]
public class ProcessMemoryTests
{
    [Fact]
    public void A_filled_512_MiB_tensor_shows_in_the_resident_set_and_the_peak()
    {
        long before = ProcessMemory.Resident();
        Assert.True(before > 0, "VmRSS read as 0: /proc/self/status is missing or unparsed");
        using (var big = ones(256L << 20, dtype: ScalarType.BFloat16))
        {
            long during = ProcessMemory.Resident();
            Assert.InRange(during - before, 400L << 20, 1L << 30);
            // Linux caches RSS counters per thread (synced every 64 faults), so two reads may differ by a few pages.
            Assert.True(ProcessMemory.Peak() >= during - (16 << 20), "the peak covers the resident set");
        }
        Assert.True(ProcessMemory.Resident() < ProcessMemory.Peak(), "freeing the tensor lowers the resident set, not the peak");
    }
}
