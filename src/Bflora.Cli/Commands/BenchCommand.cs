using System.CommandLine;
using System.Reflection;
using Bflora.Bench;
using Bflora.Distributed;

namespace Bflora.Cli.Commands;

/// <summary>
/// `bflora bench`: the performance ratios of the performance issue (table on stdout, JSON to --json); and the hidden
/// `bench-worker` it starts as a child (alone, then under `mpirun -n 2`) to compare 2 ranks with 1.
/// </summary>
public static class BenchCommand
{
    public static Command Build()
    {
        var json = BfloraCommands.JsonOption();
        var quick = QuickOption();
        var set = BfloraCommands.SetOption();
        var cmd = new Command("bench", "Measure the performance ratios (flip kernel vs copy, flips on vs off, MFU, 2 ranks vs 1)")
        {
            json, quick, set,
        };
        cmd.SetAction(parse =>
        {
            // One rank's threads: all cores, as a single-process train gets.
            DistributedRuntime.Start(1);
            var items = BenchRun.Run(parse.GetValue(quick), SelfCommand(), parse.GetValue(set) ?? [], Console.Error);
            BenchRun.PrintTable(items, Console.Out);
            if (parse.GetValue(json) is { } file) AtomicFile.WriteAllText(file.FullName, BenchRun.ToJson(items));
            return ExitCodes.Ok;
        });
        return cmd;
    }

    public static Command BuildWorker()
    {
        var quick = QuickOption();
        var set = BfloraCommands.SetOption();
        var cmd = new Command("bench-worker", "Time LoRA steps on this job's ranks (bench's child)") { quick, set };
        cmd.Hidden = true;
        cmd.SetAction(parse => ShardBench.RunWorker(parse.GetValue(quick), parse.GetValue(set) ?? [], Console.Out));
        return cmd;
    }

    static Option<bool> QuickOption() => new("--quick") { Description = "a tiny variant of every measurement (seconds; for tests)" };

    /// <summary>How to start this CLI again: the apphost itself, or `dotnet Bflora.Cli.dll` when run that way.</summary>
    static IReadOnlyList<string> SelfCommand()
    {
        string process = Environment.ProcessPath ?? throw new InvalidOperationException("cannot locate the running executable");
        string dll = Assembly.GetEntryAssembly()!.Location;
        return Path.GetFileNameWithoutExtension(process) == "dotnet" ? new[] { process, dll } : new[] { process };
    }
}
