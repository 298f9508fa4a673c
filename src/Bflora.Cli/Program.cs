using System.CommandLine;
using Bflora.Cli;
using Bflora.Distributed;

// Every failure leaves as one "error:" line and a non-zero code; a stack trace only when BFLORA_DEBUG is set.
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
    if (DistributedRuntime.ShouldReport(userError: true)) Console.Error.WriteLine($"error: {parse.Errors[0].Message}");
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
