using System.CommandLine;
using Bflora.Cli.Commands;

namespace Bflora.Cli;

/// <summary>The command tree of DESIGN.md: demo, train, eval, plan, bench, export.</summary>
public static class BfloraCommands
{
    public static RootCommand Build()
    {
        var root = new RootCommand(
            "bflora: bitflip-aware LoRA fine-tuning of Llama-3 models (random bit flips in the activations and " +
            "weights of every Linear layer; LoRA adapters learn to tolerate them).")
        {
            DemoCommand.Build(), TrainCommand.Build(), EvalCommand.Build(), PlanCommand.Build(), BenchCommand.Build(),
            ExportCommand.Build(), SelftestMpiCommand.Build(), SelftestGpuCommand.Build(), BenchCommand.BuildWorker(),
        };
        return root;
    }

    internal static Option<FileInfo> ConfigOption(bool required = true) => new("--config")
    {
        Description = "TOML config file (see configs/)",
        Required = required,
    };

    internal static Option<string[]> SetOption() => new("--set")
    {
        Description = "override a config key: section.key=value (repeatable; the value is read as TOML)",
        AllowMultipleArgumentsPerToken = false,
        Arity = ArgumentArity.ZeroOrMore,
    };

    /// <summary>Loads the config with its --set overrides and prints its warnings.</summary>
    internal static Config.BfloraConfig LoadConfig(FileInfo file, string[]? overrides)
    {
        var config = Config.BfloraConfig.Load(file.ToString(), overrides);
        foreach (var warning in config.Warnings) Warn(warning);
        return config;
    }

    internal static void Warn(string message) => Console.Error.WriteLine($"warning: {message}");

    internal static Option<FileInfo> JsonOption() => new("--json") { Description = "also write the result as JSON to this file" };
}
