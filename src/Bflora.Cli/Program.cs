using System.CommandLine;
using Bflora.Cli;

// Every failure leaves as one "error:" line and a non-zero code; a stack trace only when BFLORA_DEBUG is set.
var root = BfloraCommands.Build();
var parse = root.Parse(args);
if (parse.Errors.Count > 0)
{
    Console.Error.WriteLine($"error: {parse.Errors[0].Message}");
    return ExitCodes.BadInput;
}
try
{
    return parse.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
}
catch (Exception e)
{
    return ErrorReporting.Report(e);
}
