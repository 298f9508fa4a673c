using System.CommandLine;
using Bflora.Demo;

namespace Bflora.Cli.Commands;

public static class DemoCommand
{
    public static Command Build()
    {
        var output = new Option<DirectoryInfo>("--out") { Description = "output folder (default runs/demo)" };
        var quick = new Option<bool>("--quick") { Description = "the same path, small (about a minute)" };
        var device = new Option<string>("--device") { Description = "cpu or cuda for every stage (default: the configs', cpu)" };
        var cmd = new Command("demo",
            "The whole story on the bundled corpus: pretrain a small Llama-3-architecture model, eval clean, eval with " +
            "bit flips, bitflip-aware LoRA fine-tune, eval again; prints the table and writes results.json, loss.png")
        {
            output, quick, device,
        };
        cmd.SetAction(parse =>
        {
            var options = new DemoOptions(parse.GetValue(output)?.FullName ?? Path.Combine("runs", "demo"), parse.GetValue(quick),
                parse.GetValue(device));
            DemoRun.Execute(options, Console.Out, BfloraCommands.Warn, TrainCommand.Run);
            return ExitCodes.Ok;
        });
        return cmd;
    }
}
