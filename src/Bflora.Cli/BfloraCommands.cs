using System.CommandLine;
using System.CommandLine.Help;
using Bflora.Cli.Commands;

namespace Bflora.Cli;

/// <summary>The command tree of DESIGN.md: demo, train, eval, plan, bench, export.</summary>
public static class BfloraCommands
{
    /// <summary>
    /// The root is a plain command named "bflora" rather than a RootCommand, whose name is the executable's
    /// (Bflora.Cli): help and usage lines then show what the user typed.
    /// </summary>
    public static Command Build()
    {
        var root = new Command("bflora",
            "bflora: bitflip-aware LoRA fine-tuning of Llama-3 models (random bit flips in the activations and " +
            "weights of every Linear layer; LoRA adapters learn to tolerate them).")
        {
            new HelpOption(), new VersionOption(),
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

    /// <summary>`--device cpu|cuda`: short for `--set training.device=D`.</summary>
    internal static Shorthand DeviceOption() =>
        new(new Option<string>("--device") { Description = "cpu or cuda; short for --set training.device=D" }, "training.device");

    /// <summary>The --set strings, then the shorthands given on the command line: a shorthand wins over a --set of its key.</summary>
    internal static string[] Overrides(ParseResult parse, Option<string[]> set, params Shorthand[] shorthands) =>
        [.. parse.GetValue(set) ?? [], .. shorthands.Select(s => s.Assignment(parse)).OfType<string>()];

    /// <summary>Loads the config with its --set overrides and prints its warnings.</summary>
    internal static Config.BfloraConfig LoadConfig(FileInfo file, string[]? overrides)
    {
        var config = Config.BfloraConfig.Load(file.ToString(), overrides);
        foreach (var warning in config.Warnings) Warn(warning);
        return config;
    }

    internal static void Warn(string message) => Console.Error.WriteLine($"warning: {message}");

    internal static Option<FileInfo> JsonOption() => new("--json") { Description = "also write the result as JSON to this file" };

    /// <summary>
    /// The --json file, refused now if it could not be written at the end: an eval of a large model or a bench runs
    /// for minutes to hours before its result exists.
    /// </summary>
    internal static FileInfo? JsonTarget(ParseResult parse, Option<FileInfo> json)
    {
        var file = parse.GetValue(json);
        if (file is not null) AtomicFile.EnsureWritable(file.FullName, "--json");
        return file;
    }
}

/// <summary>An option that is short for `--set <paramref name="Key"/>=VALUE`, VALUE as typed (read as TOML, like --set).</summary>
internal sealed record Shorthand(Option Option, string Key)
{
    /// <summary>The value as typed, or null when the option was not given.</summary>
    public string? Value(ParseResult parse) => parse.GetResult(Option) is { Tokens: [var value, ..] } ? value.Value : null;

    public string? Assignment(ParseResult parse) => Value(parse) is { } value ? $"{Key}={value}" : null;
}
