using System.CommandLine;
using System.Reflection;
using Bflora.Bench;
using Bflora.Distributed;

namespace Bflora.Cli.Commands;

/// <summary>
/// `bflora bench`: the performance ratios of the performance issue (table on stdout, JSON to --json), or with
/// `--device cuda` / `--throughput` only the training throughput of the 1B shape on that device (one JSON line); and
/// the hidden `bench-worker` it starts as a child (alone, then under `mpirun -n 2`) to compare 2 ranks with 1.
/// </summary>
public static class BenchCommand
{
    public static Command Build()
    {
        var json = BfloraCommands.JsonOption();
        var quick = QuickOption();
        var set = BfloraCommands.SetOption();
        var device = BfloraCommands.DeviceOption();
        var throughput = new Option<bool>("--throughput")
        {
            Description = "only the LoRA training throughput of the Llama-3.2-1B shape (implied by --device cuda)",
        };
        var batch = new Option<int>("--batch")
        {
            Description = "windows of 2048 tokens per step for --throughput (default 1)",
            DefaultValueFactory = _ => 1,
        };
        var peak = new Option<double?>("--peak-tflops")
        {
            Description = "peak TFLOP/s for the throughput's MFU (default: a bf16 matmul measured on the device)",
        };
        var cmd = new Command("bench",
            "Measure the performance ratios (flip kernel vs copy, flips on vs off, MFU, 2 ranks vs 1), or with --device " +
            "cuda the training throughput on the GPU")
        {
            json, quick, device.Option, throughput, batch, peak, set,
        };
        cmd.SetAction(parse =>
        {
            var jsonFile = BfloraCommands.JsonTarget(parse, json);
            // One rank's threads: all cores, as a single-process train gets.
            DistributedRuntime.Start(1);
            var overrides = BfloraCommands.Overrides(parse, set, device);
            // The ratios compare CPU kernels and CPU ranks; on a GPU only the throughput means something.
            if (parse.GetValue(throughput) || device.Value(parse) is { } d && d != "cpu")
            {
                if (parse.GetValue(batch) < 1) throw new BfloraInputException($"--batch must be at least 1, got {parse.GetValue(batch)}");
                if (parse.GetValue(peak) is <= 0 or double.NaN) throw new BfloraInputException($"--peak-tflops must be positive, got {parse.GetValue(peak)}");
                var shape = TrainShape.Llama1B(parse.GetValue(batch), parse.GetValue(quick));
                var result = DeviceThroughput.Run(shape, overrides, parse.GetValue(peak), parse.GetValue(quick), Console.Error);
                Console.WriteLine(result.ToJsonLine());
                if (jsonFile is not null) AtomicFile.WriteAllText(jsonFile.FullName, result.ToJsonLine());
                return ExitCodes.Ok;
            }
            // Left silently unused, they would let a user believe the ratios were measured at that batch or peak.
            foreach (var only in new Option[] { batch, peak })
                if (parse.GetResult(only) is { Implicit: false })
                    throw new BfloraInputException($"{only.Name} applies to the throughput only (--throughput or --device cuda)");
            var items = BenchRun.Run(parse.GetValue(quick), SelfCommand(), overrides, Console.Error);
            BenchRun.PrintTable(items, Console.Out);
            if (jsonFile is not null) AtomicFile.WriteAllText(jsonFile.FullName, BenchRun.ToJson(items));
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
