using System.CommandLine;
using Bflora.Config;
using Bflora.Devices;
using Bflora.Distributed;
using Bflora.Eval;

namespace Bflora.Cli.Commands;

public static class EvalCommand
{
    public static Command Build()
    {
        var config = BfloraCommands.ConfigOption();
        var numSamples = new Option<int>("--num-samples")
        {
            Description = "number of windows of seq_len tokens (default 256; more than the data holds → all, with a warning)",
            DefaultValueFactory = _ => 256,
        };
        var bitflip = new Option<bool>("--bitflip") { Description = "flips from [bitflip] on every converted Linear, r = 0" };
        var bitflipSeed = new Option<long?>("--bitflip-seed") { Description = "overrides bitflip.base_seed" };
        var profile = new Option<bool>("--profile") { Description = "magnitude percentiles of Linear inputs and weights, suggested thresholds" };
        var adapter = new Option<DirectoryInfo>("--adapter") { Description = "add a LoRA adapter folder: a checkpoints/step-N of train, or a plain PEFT LoRA adapter of this model" };
        var json = BfloraCommands.JsonOption();
        var device = BfloraCommands.DeviceOption();
        var set = BfloraCommands.SetOption();
        var cmd = new Command("eval", "Forward-only evaluation: clean, --bitflip, or --profile (the seed's eval modes)")
        {
            config, numSamples, bitflip, bitflipSeed, profile, adapter, device.Option, json, set,
        };
        cmd.SetAction(parse =>
        {
            var cfg = BfloraCommands.LoadConfig(parse.GetValue(config)!, BfloraCommands.Overrides(parse, set, device));
            var jsonFile = BfloraCommands.JsonTarget(parse, json);
            var collectives = StartRanks(cfg);
            bool lead = collectives is null || collectives.Rank == 0;
            // Only rank 0 speaks: it prints the table, warns and writes the JSON.
            var output = lead ? Console.Out : TextWriter.Null;
            Action<string> warn = lead ? BfloraCommands.Warn : _ => { };
            // On a terminal a bar on stderr shows the windows done; under mpirun, or redirected, nothing extra.
            using var bar = collectives is null ? TerminalEvalProgress.ForStderr("eval", parse.GetValue(numSamples)) : null;
            if (parse.GetValue(profile))
            {
                // As the original: the profile measures the clean model, whatever else was asked for.
                if (parse.GetValue(bitflip) || parse.GetValue(adapter) is not null)
                    warn("profile forces the clean model (--bitflip and --adapter are ignored)");
                var profiled = ProfileRun.Execute(cfg, parse.GetValue(numSamples), output, warn, collectives: collectives, progress: bar);
                if (lead && jsonFile is not null) AtomicFile.WriteAllText(jsonFile.FullName, profiled.ToJson());
                return ExitCodes.Ok;
            }
            var request = new EvalRequest(parse.GetValue(numSamples), parse.GetValue(bitflip), parse.GetValue(bitflipSeed),
                parse.GetValue(adapter)?.FullName);
            var result = EvalRun.Execute(cfg, request, output, warn, collectives, bar);
            if (lead && jsonFile is not null) AtomicFile.WriteAllText(jsonFile.FullName, result.ToJson());
            return ExitCodes.Ok;
        });
        return cmd;
    }

    /// <summary>
    /// Under mpirun, the collectives of a sharded eval (parallelism.fsdp_degree must be the job's size, as for train);
    /// in one process null, and the model is whole whatever fsdp_degree says. Refusals come before MPI starts.
    /// </summary>
    static ICollectives? StartRanks(BfloraConfig config)
    {
        if (!LaunchInfo.Current.UnderMpirun) return null;
        ComputeDevice.EnsureSingleGpu(config);
        return DistributedRuntime.Start(config.Parallelism.FsdpDegree);
    }
}
