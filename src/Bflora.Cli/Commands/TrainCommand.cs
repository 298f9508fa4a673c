using System.CommandLine;
using Bflora.Training;

namespace Bflora.Cli.Commands;

public static class TrainCommand
{
    public static Command Build()
    {
        var config = BfloraCommands.ConfigOption();
        var steps = new Option<int?>("--steps") { Description = "short for --set training.steps=N" };
        var output = new Option<DirectoryInfo>("--out") { Description = "output folder (default [checkpoint] folder or runs/<config name>)" };
        var resume = new Option<bool>("--resume") { Description = "continue from the newest complete checkpoint in --out" };
        var set = BfloraCommands.SetOption();
        var cmd = new Command("train", "LoRA (or full) training per the config, on one process or under mpirun")
        {
            config, steps, output, resume, set,
        };
        cmd.SetAction(parse =>
        {
            var overrides = (parse.GetValue(set) ?? []).ToList();
            if (parse.GetValue(steps) is { } n) overrides.Add($"training.steps={n}");
            var cfg = BfloraCommands.LoadConfig(parse.GetValue(config)!, overrides.ToArray());
            var options = new TrainOptions(parse.GetValue(output)?.FullName ?? cfg.OutputFolder, parse.GetValue(resume));
            // A live progress bar only on an interactive terminal; redirected output (CI, logs) gets plain lines.
            var result = Console.IsOutputRedirected
                ? TrainRun.Execute(cfg, options, new PlainProgress(Console.Out))
                : TerminalProgress.Run(0, cfg.Training.Steps, progress => TrainRun.Execute(cfg, options, progress));
            Console.WriteLine($"Done: {result.Steps} steps, {result.TokensPerSecond:F0} tokens/s; last checkpoint {result.LastCheckpoint}");
            return ExitCodes.Ok;
        });
        return cmd;
    }
}
