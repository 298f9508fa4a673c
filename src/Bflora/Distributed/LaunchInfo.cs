namespace Bflora.Distributed;

/// <summary>
/// Where this process sits in the job, read from the variables mpirun (Open MPI) sets before the process starts, so it
/// is known before MPI_Init — the world-size check can then fail without ever entering MPI (nothing can hang).
/// Without mpirun: world 1, rank 0.
/// </summary>
public sealed record LaunchInfo(int WorldSize, int Rank, int LocalSize, int LocalRank, bool UnderMpirun)
{
    public static LaunchInfo Current { get; } = Read(Environment.GetEnvironmentVariable);

    public static LaunchInfo Read(Func<string, string?> env)
    {
        if (!int.TryParse(env("OMPI_COMM_WORLD_SIZE"), out int size) || size < 1)
            return new LaunchInfo(1, 0, 1, 0, UnderMpirun: false);
        int rank = int.TryParse(env("OMPI_COMM_WORLD_RANK"), out int r) ? r : 0;
        int localSize = int.TryParse(env("OMPI_COMM_WORLD_LOCAL_SIZE"), out int ls) && ls > 0 ? ls : size;
        int localRank = int.TryParse(env("OMPI_COMM_WORLD_LOCAL_RANK"), out int lr) ? lr : rank;
        return new LaunchInfo(size, rank, localSize, localRank, UnderMpirun: true);
    }

    /// <summary>
    /// Torch threads for this rank: the node's cores shared evenly by the ranks on it, but never more than the cores
    /// this process may run on (mpirun binds each rank to one core by default for small jobs; scripts/run.sh passes
    /// --bind-to none so the share is usable).
    /// </summary>
    public int ThreadsPerRank(int nodeCores, int allowedCores) =>
        Math.Max(1, Math.Min(allowedCores, nodeCores / Math.Max(1, LocalSize)));
}
