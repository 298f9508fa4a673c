using System.CommandLine;
using Bflora.Distributed;

namespace Bflora.Cli.Commands;

/// <summary>
/// Hidden diagnostic, not part of the public contract: `mpirun -n 2 bflora selftest-mpi` checks every collective on
/// both dtypes against known values and its reference twin (exit 0 only if all pass). --crash-rank R makes rank R fail
/// after MPI has started while the others wait in a barrier: the job must end (the tests time it). --bench-mib M
/// also measures all-gather / reduce-scatter bandwidth.
/// </summary>
public static class SelftestMpiCommand
{
    public static Command Build()
    {
        var crashRank = new Option<int?>("--crash-rank") { Description = "this rank throws after MPI_Init; the rest wait in a barrier" };
        var benchMib = new Option<int?>("--bench-mib") { Description = "also measure collectives on a buffer of this many MiB (fp32)" };
        var cmd = new Command("selftest-mpi", "Check the MPI collectives (diagnostic)") { crashRank, benchMib };
        cmd.Hidden = true;
        cmd.SetAction(parse =>
        {
            var c = DistributedRuntime.Start();
            if (parse.GetValue(crashRank) is { } crash)
            {
                if (c.Rank == crash) throw new InvalidOperationException($"selftest: rank {crash} fails on purpose");
                c.Barrier();   // never completes: the failing rank aborts the job
                return ExitCodes.Failure;
            }
            Console.WriteLine($"rank {c.Rank} of {c.WorldSize}: {TorchSharp.torch.get_num_threads()} torch threads");
            bool ok = CollectivesSelfTest.Run(c, Console.Out);
            if (parse.GetValue(benchMib) is { } mib) CollectivesSelfTest.Bench(c, mib, reps: 5, Console.Out);
            return ok ? ExitCodes.Ok : ExitCodes.Failure;
        });
        return cmd;
    }
}
