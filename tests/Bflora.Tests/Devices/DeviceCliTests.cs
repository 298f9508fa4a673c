using Bflora.Tests.Checkpoints;
using Bflora.Tests.Cli;
using Bflora.Tests.Reliability;
using Xunit;

namespace Bflora.Tests.Devices;

/// <summary>
/// `--device` through the real CLI. The test build's libtorch is CPU-only, so every CUDA request here must end in one
/// clear line; the CUDA path itself runs only on a GPU machine (README, GPU). CUDA under mpirun:
/// Reliability/MpiFailureTests; BFLORA_LIBTORCH: LibTorchPreloadTests.
/// </summary>
public class DeviceCliTests
{
    internal static readonly string[] EvalDebug = ["eval", "--config", "configs/debug.toml", "--num-samples", "2"];

    [Theory]
    [InlineData("train")]
    [InlineData("eval")]
    [InlineData("bench")]
    [InlineData("demo")]
    public void Cuda_without_a_cuda_libtorch_is_one_line_naming_the_libtorch_variable(string command)
    {
        using var dir = new TempFolder();
        string[] args = command switch
        {
            "train" => ["train", "--config", "configs/debug.toml", "--steps", "1", "--out", dir.File("run"), "--device", "cuda"],
            "eval" => [.. EvalDebug, "--device", "cuda"],
            "demo" => ["demo", "--quick", "--out", dir.File("run"), "--device", "cuda"],
            _ => ["bench", "--quick", "--device", "cuda"],
        };
        CleanError.Check(CliRunner.Run(args, CleanError.Timeout), "training.device = \"cuda\"", "BFLORA_LIBTORCH");
        Assert.False(Directory.Exists(Path.Combine(dir.File("run"), "checkpoints")));
        Assert.False(Directory.Exists(Path.Combine(dir.File("run"), "pretrain")));
    }

    [Fact]
    public void Cuda_with_several_ranks_is_refused_for_want_of_nccl()
    {
        var r = CliRunner.Run(["train", "--config", "configs/debug.toml", "--steps", "1", "--device", "cuda",
            "--set", "parallelism.fsdp_degree=2"], CleanError.Timeout);
        CleanError.Check(r, "NCCL", "fsdp_degree = 2");
    }

    [Fact]
    public void Device_wins_over_a_set_of_the_same_key_and_a_bad_name_is_a_config_error()
    {
        var cpu = CliRunner.Run([.. EvalDebug, "--set", "training.device=cuda", "--device", "cpu"], CleanError.Timeout);
        Assert.True(cpu.ExitCode == 0, cpu.Stderr);
        Assert.Contains("| 2 | 128 |", cpu.Stdout);
        CleanError.Check(CliRunner.Run([.. EvalDebug, "--device", "gpu"], CleanError.Timeout), "training.device", "\"gpu\"");
    }
}
