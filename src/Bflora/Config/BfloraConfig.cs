using Bflora.Bitflip;
using Tomlyn;
using Tomlyn.Model;

namespace Bflora.Config;

/// <summary>The whole run configuration: one TOML file plus <c>--set section.key=value</c> overrides.</summary>
public sealed class BfloraConfig
{
    public ModelSection Model { get; } = new();
    public TrainingSection Training { get; } = new();
    public ParallelismSection Parallelism { get; } = new();
    public LoraSection Lora { get; } = new();
    public BitflipSection Bitflip { get; } = new();
    public DataSection Data { get; } = new();
    public CheckpointSection Checkpoint { get; } = new();

    /// <summary>The file name without extension; names the default output folder.</summary>
    public string Name { get; private set; } = "config";

    /// <summary>Non-fatal remarks (e.g. a probability snapped to a power of ½) for the caller to print.</summary>
    public List<string> Warnings { get; } = new();

    public string OutputFolder => Checkpoint.Folder ?? System.IO.Path.Combine("runs", Name);

    public static BfloraConfig Load(string path, IEnumerable<string>? overrides = null)
    {
        if (!File.Exists(path)) throw new ConfigException($"config file not found: {path}");
        string text;
        try { text = File.ReadAllText(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ConfigException($"cannot read config file {path}: {e.Message}");
        }
        var table = ParseToml(text, path);
        foreach (var assignment in overrides ?? Array.Empty<string>()) ApplyOverride(table, assignment);
        var config = FromTable(table, path);
        config.Name = System.IO.Path.GetFileNameWithoutExtension(path);
        return config;
    }

    /// <summary>Builds a config from TOML text (no file); used by tests and the demo.</summary>
    public static BfloraConfig FromText(string toml, string name = "config", IEnumerable<string>? overrides = null)
    {
        var table = ParseToml(toml, name);
        foreach (var assignment in overrides ?? Array.Empty<string>()) ApplyOverride(table, assignment);
        var config = FromTable(table, name);
        config.Name = name;
        return config;
    }

    private static TomlTable ParseToml(string text, string source)
    {
        try
        {
            return TomlSerializer.Deserialize<TomlTable>(text) ?? new TomlTable();
        }
        catch (TomlException e)
        {
            string first = e.Message.Split('\n', StringSplitOptions.RemoveEmptyEntries).FirstOrDefault() ?? "invalid TOML";
            throw new ConfigException($"{source}: TOML syntax error: {first.Trim()}");
        }
    }

    /// <summary>Applies <c>section.key=value</c>; the value is read as TOML, and a bare word as a string.</summary>
    private static void ApplyOverride(TomlTable table, string assignment)
    {
        int eq = assignment.IndexOf('=');
        string path = eq < 0 ? "" : assignment[..eq].Trim();
        int dot = path.IndexOf('.');
        if (eq < 0 || dot <= 0 || dot == path.Length - 1)
            throw new ConfigException($"--set expects section.key=value, got '{assignment}'");
        string section = path[..dot], key = path[(dot + 1)..], raw = assignment[(eq + 1)..].Trim();
        if (ConfigSchema.Find(section, key) is null)
            throw new ConfigException($"unknown config key '{path}' (from --set)");
        object value;
        try
        {
            var parsed = TomlSerializer.Deserialize<TomlTable>($"v = {raw}");
            value = parsed!["v"];
        }
        catch (TomlException)
        {
            value = raw;
        }
        if (!table.TryGetValue(section, out var existing) || existing is not TomlTable sectionTable)
        {
            sectionTable = new TomlTable();
            table[section] = sectionTable;
        }
        sectionTable[key] = value;
    }

    private static BfloraConfig FromTable(TomlTable table, string source)
    {
        var config = new BfloraConfig();
        foreach (var (sectionName, sectionValue) in table)
        {
            if (!ConfigSchema.Sections.Contains(sectionName))
                throw new ConfigException($"{source}: unknown config section '[{sectionName}]'");
            if (sectionValue is not TomlTable section)
                throw new ConfigException($"{source}: '{sectionName}' must be a table ([{sectionName}])");
            foreach (var (key, value) in section)
            {
                var schema = ConfigSchema.Find(sectionName, key)
                             ?? throw new ConfigException($"{source}: unknown config key '{sectionName}.{key}'");
                var converted = schema.Convert(value);
                if (converted is null)
                    throw new ConfigException(
                        $"{source}: '{schema.Path}' must be {schema.TypeName}, got {Describe(value)}");
                if (converted is OutOfRange)
                    throw new ConfigException(
                        $"{source}: '{schema.Path}' is out of range: {Describe(value)} (must be {schema.TypeName})");
                schema.Apply(config, converted);
            }
        }
        config.Validate(source);
        return config;
    }

    private void Validate(string source)
    {
        if (Model.Flavor is null && Model.HfModelPath is null)
            throw new ConfigException($"{source}: set 'model.flavor' or 'model.hf_model_path'");
        if (Model.Init == "pretrained" && Model.HfModelPath is null)
            throw new ConfigException($"{source}: 'model.init = \"pretrained\"' needs 'model.hf_model_path'");
        if (Model.Flavor is not null && !Models.Llama3.Flavors.All.ContainsKey(Model.Flavor))
            throw new ConfigException(
                $"{source}: 'model.flavor' is '{Model.Flavor}', known: {string.Join(", ", Models.Llama3.Flavors.All.Keys)}");
        foreach (var (key, p) in new[] { ("w_p_exp", Bitflip.WPExp), ("w_p_frac", Bitflip.WPFrac),
                                          ("x_p_exp", Bitflip.XPExp), ("x_p_frac", Bitflip.XPFrac) })
        {
            if (!FlipProbability.IsExact(p))
                Warnings.Add($"bitflip.{key} = {p:G6} is not a power of 1/2; using {FlipProbability.Snapped(p):G6} " +
                             $"(0.5^{FlipProbability.Halves(p)})");
        }
    }

    private static string Describe(object value) => value switch
    {
        string s => $"\"{s}\"",
        bool b => b ? "true" : "false",
        TomlTable => "a table",
        TomlArray => "an array",
        double d => d.ToString("G6", System.Globalization.CultureInfo.InvariantCulture),
        _ => Convert.ToString(value, System.Globalization.CultureInfo.InvariantCulture) ?? "?",
    };
}
