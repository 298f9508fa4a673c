using System.CommandLine;
using Bflora.Bitflip;

namespace Bflora.Cli.Commands;

/// <summary>
/// Hidden diagnostic, not part of the public contract: `bflora selftest-gpu` is the GPU test subset, run on a GPU
/// machine where the test suite cannot run (no .NET SDK there). It holds the device's flip kernels to the known
/// answers and to the CPU reference (exit 0 only if all pass); `--device cpu` runs the same checks on the CPU engine.
/// </summary>
public static class SelftestGpuCommand
{
    public static Command Build()
    {
        var device = new Option<string>("--device") { Description = "cuda (default) or cpu", DefaultValueFactory = _ => "cuda" };
        var cmd = new Command("selftest-gpu", "Check the flip kernels of a device against the reference (diagnostic)") { device };
        cmd.Hidden = true;
        cmd.SetAction(parse =>
        {
            var name = parse.GetValue(device)!;
            if (name != "cpu" && name != "cuda") throw new BfloraInputException($"--device must be cpu or cuda, not \"{name}\"");
            if (name == "cuda" && !TorchSharp.torch.cuda.is_available())
                throw new BfloraInputException("--device cuda: CUDA is not available to this libtorch (set BFLORA_LIBTORCH to a CUDA build's torch/lib folder)");
            bool ok = FlipSelfTest.Run(new TorchSharp.torch.Device(name), Console.Out);
            Console.WriteLine(ok ? "selftest-gpu: all checks passed" : "selftest-gpu: FAILED");
            return ok ? ExitCodes.Ok : ExitCodes.Failure;
        });
        return cmd;
    }
}
