using System.Runtime.InteropServices;
using TorchSharp;

namespace Bflora.Distributed;

/// <summary>A parallelism setting that disagrees with how the job was launched; identical on every rank.</summary>
public sealed class WorldMismatchException(string message) : BfloraInputException(message);

/// <summary>
/// The process-wide life of MPI next to TorchSharp. Order: check the world size against the config (from mpirun's
/// environment, before MPI exists) → MPI_Init_thread(SERIALIZED) → torch.set_num_threads(cores ÷ ranks per node), all
/// before any heavy torch work → ... → MPI_Finalize at a normal exit, or MPI_Abort when a rank fails, so mpirun ends
/// every rank instead of leaving them blocked in a collective.
/// </summary>
public static unsafe class DistributedRuntime
{
    private static ICollectives? _collectives;

    /// <summary>True between MPI_Init_thread and MPI_Finalize in this process.</summary>
    public static bool MpiStarted { get; private set; }

    /// <summary>
    /// Starts the collectives for a run that expects <paramref name="fsdpDegree"/> ranks: MPI under mpirun, else the
    /// single-process implementation. Throws <see cref="WorldMismatchException"/> (before touching MPI) when the job's
    /// world size differs. Idempotent.
    /// </summary>
    public static ICollectives Start(int fsdpDegree)
    {
        var launch = LaunchInfo.Current;
        if (fsdpDegree != launch.WorldSize)
            throw new WorldMismatchException(
                $"parallelism.fsdp_degree is {fsdpDegree} but the job has world size {launch.WorldSize} " +
                $"(launch {fsdpDegree} ranks, e.g. scripts/run.sh, or --set parallelism.fsdp_degree={launch.WorldSize})");
        return Start();
    }

    /// <summary>Starts the collectives for whatever world this process was launched into (see <see cref="Start(int)"/>).</summary>
    public static ICollectives Start()
    {
        if (_collectives is not null) return _collectives;
        var launch = LaunchInfo.Current;
        if (launch.UnderMpirun)
        {
            if (!MpiNative.Available())
                throw new BfloraInputException("running under mpirun but libmpi.so.40 cannot be loaded (apt-get install openmpi-bin libopenmpi-dev)");
            int provided;
            MpiNative.Check(MpiNative.MPI_Init_thread(null, null, MpiNative.ThreadSerialized, &provided), "MPI_Init_thread");
            MpiStarted = true;
            if (provided < MpiNative.ThreadSerialized)
                throw new InvalidOperationException($"MPI provides thread level {provided}, bflora needs MPI_THREAD_SERIALIZED");
        }
        torch.set_num_threads(launch.ThreadsPerRank(NodeCores(), Environment.ProcessorCount));
        _collectives = launch.UnderMpirun ? new MpiCollectives() : new SingleProcessCollectives();
        return _collectives;
    }

    /// <summary>
    /// Whether this process should print an error: always, except user errors raised under mpirun before MPI started —
    /// those come from the command line and config, identical on every rank, so rank 0 alone says it once. (A user
    /// error on another rank only still ends the job: mpirun stops everyone when a rank exits non-zero.)
    /// </summary>
    public static bool ShouldReport(bool userError) =>
        !userError || !LaunchInfo.Current.UnderMpirun || MpiStarted || LaunchInfo.Current.Rank == 0;

    /// <summary>After a failure on this rank: ends the whole job (MPI_Abort never returns) so no other rank waits forever.</summary>
    public static void AbortJob(int exitCode)
    {
        if (!MpiStarted) return;
        Console.Out.Flush();
        Console.Error.Flush();
        MpiNative.MPI_Abort(MpiNative.CommWorld, exitCode);
    }

    /// <summary>MPI_Finalize once, when the command returns normally (the CLI's Program calls it; every rank gets there).</summary>
    public static void Finish()
    {
        if (!MpiStarted) return;
        MpiStarted = false;
        _collectives = null;
        MpiNative.Check(MpiNative.MPI_Finalize(), "MPI_Finalize");
    }

    [DllImport("libc", SetLastError = false)]
    private static extern long sysconf(int name);

    // _SC_NPROCESSORS_ONLN on Linux: the node's cores, whatever this process is bound to.
    private static int NodeCores() => (int)Math.Max(1, sysconf(84));
}
