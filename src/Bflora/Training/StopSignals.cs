using System.Runtime.InteropServices;

namespace Bflora.Training;

/// <summary>
/// Turns the first SIGINT, SIGTERM, SIGUSR1 or SIGUSR2 into a request to stop after the current step (the trainer then
/// checkpoints it and draws loss.png), so Ctrl-C, a scheduler's preemption notice or `kill -USR1` loses no work. A
/// second signal gets the default action and ends the process at once, for a run that does not reach its step's end.
/// Under mpirun the ranks agree on the request at every step (<see cref="IGradientSync.MaxOverRanks"/>), so one rank's
/// signal stops them all after the same step; mpirun forwards SIGUSR1/SIGUSR2 to every rank.
/// </summary>
public sealed class StopSignals : IDisposable
{
    /// <summary>Linux signal numbers, for the exit code (128 + signal) and the log line.</summary>
    public const int SigInt = 2, SigUsr1 = 10, SigUsr2 = 12, SigTerm = 15;

    private readonly List<PosixSignalRegistration> _registrations = new();
    private readonly string _who;
    private int _signal;

    /// <summary>The first signal received, or 0.</summary>
    public int Received => Volatile.Read(ref _signal);

    private StopSignals(string who) => _who = who;

    /// <summary>
    /// Starts listening; disposing restores the default actions. The first signal is acknowledged at once with one
    /// line on stderr, prefixed by <paramref name="who"/> (e.g. "rank 1: "), since the step may run for minutes.
    /// </summary>
    public static StopSignals Listen(string who = "")
    {
        var signals = new StopSignals(who);
        // PosixSignal has no members for SIGUSR1/2; the API takes raw signal numbers cast to it.
        foreach (int number in new[] { SigInt, SigTerm, SigUsr1, SigUsr2 })
            signals._registrations.Add(PosixSignalRegistration.Create(ToPosix(number), signals.OnSignal));
        return signals;
    }

    private void OnSignal(PosixSignalContext context)
    {
        int number = FromPosix(context.Signal);
        // Only the first is held back; a second one, of any kind, takes its default action.
        context.Cancel = Interlocked.CompareExchange(ref _signal, number, 0) == 0;
        if (context.Cancel)
            Console.Error.WriteLine($"{_who}{Name(number)}: stopping after the current step, with a checkpoint (send it again to end now)");
    }

    public static string Name(int signal) => signal switch
    {
        SigInt => "SIGINT",
        SigTerm => "SIGTERM",
        SigUsr1 => "SIGUSR1",
        SigUsr2 => "SIGUSR2",
        _ => $"signal {signal}",
    };

    private static PosixSignal ToPosix(int number) => number switch
    {
        SigInt => PosixSignal.SIGINT,
        SigTerm => PosixSignal.SIGTERM,
        _ => (PosixSignal)number,
    };

    private static int FromPosix(PosixSignal signal) => signal switch
    {
        PosixSignal.SIGINT => SigInt,
        PosixSignal.SIGTERM => SigTerm,
        _ => (int)signal,
    };

    public void Dispose()
    {
        foreach (var registration in _registrations) registration.Dispose();
        _registrations.Clear();
    }
}
