using System.CommandLine;
using Bflora.Devices;
using Bflora.Distributed;
using Bflora.Training;

namespace Bflora.Cli.Commands;

public static class TrainCommand
{
    public static Command Build()
    {
        var config = BfloraCommands.ConfigOption();
        var steps = new Shorthand(new Option<int?>("--steps") { Description = "short for --set training.steps=N" }, "training.steps");
        var device = BfloraCommands.DeviceOption();
        var output = new Option<DirectoryInfo>("--out") { Description = "output folder (default [checkpoint] folder or runs/<config name>)" };
        var resume = new Option<bool>("--resume") { Description = "continue from the newest complete checkpoint in --out" };
        var set = BfloraCommands.SetOption();
        var cmd = new Command("train", "LoRA (or full) training per the config, on one process or under mpirun")
        {
            config, steps.Option, output, resume, device.Option, set,
        };
        cmd.SetAction(parse =>
        {
            var cfg = BfloraCommands.LoadConfig(parse.GetValue(config)!, BfloraCommands.Overrides(parse, set, steps, device));
            var options = new TrainOptions(parse.GetValue(output)?.FullName ?? cfg.OutputFolder, parse.GetValue(resume),
                StopOnSignals: true);
            var result = Run(cfg, options);
            string how = result.StoppedBy == 0 ? "Done" : $"Stopped by {StopSignals.Name(result.StoppedBy)}";
            if (LaunchInfo.Current.Rank == 0)
                Console.WriteLine($"{how}: {result.Steps} of {cfg.Training.Steps} steps, {result.TokensPerSecond:F0} tokens/s; " +
                                  $"last checkpoint {result.LastCheckpoint}");
            // The shell's code for a process ended by that signal: a job script sees the run did not finish.
            return result.StoppedBy == 0 ? ExitCodes.Ok : 128 + result.StoppedBy;
        });
        return cmd;
    }

    /// <summary>
    /// Trains on this process's rank: first the world size against parallelism.fsdp_degree and the device (one error
    /// line, exit 2 on every rank), then MPI and torch threads (DistributedRuntime), then the loop with gradients summed
    /// over ranks. A live progress bar on an interactive terminal; plain lines when redirected (CI, logs) or forwarded
    /// by mpirun.
    /// </summary>
    public static TrainResult Run(Config.BfloraConfig config, TrainOptions options)
    {
        ComputeDevice.EnsureSingleGpu(config);
        var sync = new CollectivesGradientSync(DistributedRuntime.Start(config.Parallelism.FsdpDegree));
        return Console.IsOutputRedirected || LaunchInfo.Current.UnderMpirun
            ? TrainRun.Execute(config, options, new PlainProgress(Console.Out), sync)
            : TerminalProgress.Run(0, config.Training.Steps, progress => TrainRun.Execute(config, options, progress, sync));
    }
}
