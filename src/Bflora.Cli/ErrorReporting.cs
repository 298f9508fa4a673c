using Bflora.Config;

namespace Bflora.Cli;

public static class ErrorReporting
{
    /// <summary>Prints one line for <paramref name="error"/> and returns the exit code it deserves.</summary>
    public static int Report(Exception error)
    {
        var e = error is AggregateException { InnerExceptions.Count: 1 } agg ? agg.InnerExceptions[0] : error;
        if (Environment.GetEnvironmentVariable("BFLORA_DEBUG") is { Length: > 0 }) Console.Error.WriteLine(e);
        string message = e.Message.Split('\n')[0].Trim();
        if (IsUserError(e))
        {
            Console.Error.WriteLine($"error: {message}");
            return ExitCodes.BadInput;
        }
        Console.Error.WriteLine($"error: internal failure ({e.GetType().Name}): {message}");
        return ExitCodes.Failure;
    }

    private static bool IsUserError(Exception e) => e is ConfigException or BfloraInputException or ArgumentException
        or FileNotFoundException or DirectoryNotFoundException or UnauthorizedAccessException or InvalidDataException
        || e.GetType().Name.EndsWith("FormatException", StringComparison.Ordinal);
}
