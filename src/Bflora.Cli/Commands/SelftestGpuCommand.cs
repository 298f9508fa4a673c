using System.CommandLine;
using Bflora.Bitflip;
using Bflora.Devices;
using Bflora.Eval;

namespace Bflora.Cli.Commands;

/// <summary>
/// Hidden diagnostic, not part of the public contract: `bflora selftest-gpu` is the GPU test subset, run on a GPU
/// machine where the test suite cannot run (no .NET SDK there). It holds the device's flip kernels to the known
/// answers and to the CPU reference, the profile's counting to the CPU's, and a tiny training run to the CPU's losses (exit 0 only if all pass);
/// `--device cpu` runs the same checks on the CPU engine.
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
            var resolved = ComputeDevice.Resolve(name);
            bool ok = FlipSelfTest.Run(resolved, Console.Out);
            ok &= ProfileSelfTest.Run(resolved, Console.Out);
            ok &= TrainingParity.Run(name, Console.Out);
            Console.WriteLine(ok ? "selftest-gpu: all checks passed" : "selftest-gpu: FAILED");
            return ok ? ExitCodes.Ok : ExitCodes.Failure;
        });
        return cmd;
    }
}
