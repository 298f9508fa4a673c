using Bflora.Config;
using Bflora.Distributed;
using Bflora.Training;

namespace Bflora.Cli;

public static class ErrorReporting
{
    /// <summary>
    /// Prints one line for <paramref name="error"/> and returns the exit code it deserves. Under mpirun, once MPI has
    /// started, it then aborts the whole job (every rank exits non-zero) instead of returning.
    /// </summary>
    public static int Report(Exception error)
    {
        var e = error is AggregateException { InnerExceptions.Count: 1 } agg ? agg.InnerExceptions[0] : error;
        if (e is NonFiniteStepException && DistributedRuntime.MpiStarted)
        {
            // Every rank reaches this verdict at the same step, so all end together through MPI_Finalize (no abort
            // banner) and rank 0 alone says why.
            if (LaunchInfo.Current.Rank == 0) Console.Error.WriteLine($"error: {e.Message}");
            DistributedRuntime.Finish();
            return ExitCodes.BadInput;
        }
        bool user = IsUserError(e);
        if (DistributedRuntime.ShouldReport(user))
        {
            if (Environment.GetEnvironmentVariable("BFLORA_DEBUG") is { Length: > 0 }) Console.Error.WriteLine(e);
            string message = e.Message.Split('\n')[0].Trim();
            string rank = DistributedRuntime.MpiStarted ? $"rank {LaunchInfo.Current.Rank}: " : "";
            Console.Error.WriteLine(user ? $"error: {rank}{message}" : $"error: {rank}internal failure ({e.GetType().Name}): {message}");
        }
        int code = user ? ExitCodes.BadInput : ExitCodes.Failure;
        DistributedRuntime.AbortJob(code);
        return code;
    }

    // Any IOException that reaches here is about a path the user named (an output that is a folder, a full disk): the
    // system's message names the path, and it is no bug of bflora's.
    private static bool IsUserError(Exception e) => e is ConfigException or BfloraInputException or ArgumentException
        or IOException or UnauthorizedAccessException or InvalidDataException
        || e.GetType().Name.EndsWith("FormatException", StringComparison.Ordinal);
}
