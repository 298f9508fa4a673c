using System.CommandLine;
using Bflora.Lora;
using Bflora.Training;

namespace Bflora.Cli.Commands;

public static class ExportCommand
{
    public static Command Build()
    {
        var adapter = new Option<DirectoryInfo>("--adapter") { Description = "adapter folder (checkpoints/step-N)", Required = true };
        var output = new Option<DirectoryInfo>("--out") { Description = "output folder", Required = true };
        var merged = new Option<bool>("--merged") { Description = "write a merged HF-layout model (needs --config)" };
        var config = BfloraCommands.ConfigOption(required: false);
        var cmd = new Command("export", "Export a trained adapter as a PEFT folder, or merged into an HF-layout model")
        {
            adapter, output, merged, config,
        };
        cmd.SetAction(parse =>
        {
            string adapterDir = parse.GetValue(adapter)!.FullName, outDir = parse.GetValue(output)!.FullName;
            if (!Directory.Exists(adapterDir)) throw new BfloraInputException($"adapter folder not found: {adapterDir}");
            TrainRun.EnsureWritable(outDir);
            if (parse.GetValue(merged))
            {
                var file = parse.GetValue(config) ?? throw new BfloraInputException("--merged needs --config (the base model)");
                AdapterExport.WriteMerged(BfloraCommands.LoadConfig(file, null), adapterDir, outDir);
                Console.WriteLine($"Wrote the merged model to {outDir}");
            }
            else
            {
                AdapterExport.CopyAdapter(adapterDir, outDir);
                Console.WriteLine($"Wrote the PEFT adapter to {outDir}");
            }
            return ExitCodes.Ok;
        });
        return cmd;
    }
}
