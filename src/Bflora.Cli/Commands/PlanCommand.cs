using System.CommandLine;
using Bflora.Distributed;

namespace Bflora.Cli.Commands;

/// <summary>`bflora plan`: the per-rank memory of a training run, from the config's dimensions alone.</summary>
public static class PlanCommand
{
    public static Command Build()
    {
        var config = BfloraCommands.ConfigOption();
        var world = new Option<int?>("--world") { Description = "number of ranks (default: parallelism.fsdp_degree)" };
        var json = BfloraCommands.JsonOption();
        var set = BfloraCommands.SetOption();
        var cmd = new Command("plan", "Per-rank memory plan (parameters, gradients, optimizer state, gathered block, activations)")
        {
            config, world, json, set,
        };
        cmd.SetAction(parse =>
        {
            var cfg = BfloraCommands.LoadConfig(parse.GetValue(config)!, parse.GetValue(set));
            int ranks = parse.GetValue(world) ?? cfg.Parallelism.FsdpDegree;
            var args = MemoryPlanner.ResolveArgs(cfg);
            var inputs = PlanInputs.From(cfg, ranks);
            var plan = MemoryPlanner.Compute(args, inputs);
            string mode = inputs.FullTraining ? "full" : $"lora r {inputs.LoraRank}";
            Console.Write(plan.ToTable(
                $"memory plan per rank: {cfg.Model.Flavor ?? "config.json"} ({args.TotalParams / 1e9:F2}B params), world {ranks}, " +
                $"trainable {mode}, local batch {inputs.LocalBatch} x seq {inputs.SeqLen}"));
            if (parse.GetValue(json) is { } file) AtomicFile.WriteAllText(file.FullName, plan.ToJson());
            return ExitCodes.Ok;
        });
        return cmd;
    }
}
