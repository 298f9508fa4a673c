using System.CommandLine;

namespace Bflora.Cli.Commands;

public static class EvalCommand
{
    public static Command Build()
    {
        var cmd = new Command("eval", "Forward-only evaluation: clean, --bitflip, or --profile (the seed's eval modes)")
        {
            BfloraCommands.ConfigOption(),
            new Option<int>("--num-samples") { Description = "number of windows of seq_len tokens (default 256)", DefaultValueFactory = _ => 256 },
            new Option<bool>("--bitflip") { Description = "flips from [bitflip] on every converted Linear, r = 0" },
            new Option<long?>("--bitflip-seed") { Description = "overrides bitflip.base_seed" },
            new Option<bool>("--profile") { Description = "magnitude percentiles of Linear inputs and weights, suggested thresholds" },
            new Option<DirectoryInfo>("--adapter") { Description = "add a trained LoRA adapter folder" },
            BfloraCommands.JsonOption(),
            BfloraCommands.SetOption(),
        };
        cmd.SetAction(_ => ExitCodes.NotBuilt);
        return cmd;
    }
}
