namespace Bflora.Cli;

public static class ExitCodes
{
    public const int Ok = 0;
    /// <summary>An unexpected internal failure.</summary>
    public const int Failure = 1;
    /// <summary>Bad input: command line, config, model or data files.</summary>
    public const int BadInput = 2;
    /// <summary>The command exists in the contract but is not built yet.</summary>
    public const int NotBuilt = 3;
}
