using System.CommandLine;
using Bflora.Cli;
using Bflora.Distributed;

// Every failure leaves as one "error:" line and a non-zero code; a stack trace only when BFLORA_DEBUG is set.
// mpirun hands each rank a pseudo-terminal, and .NET would open the console by writing the terminal's keypad-mode
// escape (ESC[?1h ESC=) into the job's output and logs; a terminal type without one keeps the output plain text.
if (LaunchInfo.Current.UnderMpirun) Environment.SetEnvironmentVariable("TERM", "dumb");
if (LibTorchContext.Wanted)
{
    try
    {
        return LibTorchContext.Run(args);
    }
    catch (Exception e)
    {
        return ErrorReporting.Report(e);
    }
}
var root = BfloraCommands.Build();
var parse = root.Parse(args);
if (parse.Errors.Count > 0)
{
    if (DistributedRuntime.ShouldReport(userError: true)) Console.Error.WriteLine($"error: {ParseErrors.Describe(parse)}");
    return ExitCodes.BadInput;
}
try
{
    int code = parse.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
    DistributedRuntime.Finish();   // MPI_Finalize when a command started MPI (a failing rank aborts the job instead)
    return code;
}
catch (Exception e)
{
    return ErrorReporting.Report(e);
}
