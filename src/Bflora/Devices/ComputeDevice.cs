using Bflora.Config;
using TorchSharp;
using static TorchSharp.torch;

namespace Bflora.Devices;

/// <summary>
/// The torch device a run computes on, from <c>[training] device</c>. Everything that lives for the whole run
/// (parameters, adapters, masters and moments, batches, RoPE tables) is put on it; files are read and written on the CPU.
/// </summary>
public static class ComputeDevice
{
    /// <summary>
    /// The device named by <paramref name="name"/> ("cpu" or "cuda"). CUDA is GPU 0; without a CUDA-enabled libtorch that
    /// sees a GPU, the answer is one error line pointing at <see cref="LibTorchPreload.Variable"/>.
    /// </summary>
    public static Device Resolve(string name) => name switch
    {
        "cpu" => CPU,
        "cuda" => Cuda(),
        _ => throw new BfloraInputException($"training.device must be \"cpu\" or \"cuda\", got \"{name}\""),
    };

    /// <summary>
    /// The device of a training run. The GPU path is one process on one GPU: sharding over GPUs needs NCCL collectives,
    /// which bflora does not have yet (its MPI collectives move host memory).
    /// </summary>
    public static Device ForTraining(BfloraConfig config)
    {
        EnsureSingleGpu(config);
        return Resolve(config.Training.Device);
    }

    /// <summary>Refuses CUDA with more than one rank; checked before MPI starts, so one rank reports it once.</summary>
    public static void EnsureSingleGpu(BfloraConfig config)
    {
        if (config.Training.Device == "cuda" && config.Parallelism.FsdpDegree > 1)
            throw new BfloraInputException(
                $"training.device = \"cuda\" with parallelism.fsdp_degree = {config.Parallelism.FsdpDegree}: training on " +
                "several GPUs needs NCCL collectives, which are not supported yet; use fsdp_degree = 1 (one GPU)");
    }

    /// <summary>TorchSharp's Device has reference equality; two tensors on one device carry two Device objects.</summary>
    public static bool Same(Device a, Device b) => a.type == b.type && a.index == b.index;

    /// <summary>Waits for the device's queued work, so a wall clock read next measures it (CUDA runs asynchronously).</summary>
    public static void Synchronize(Device device)
    {
        if (device.type == DeviceType.CUDA) cuda.synchronize(device);
    }

    /// <summary>
    /// Bytes of a GPU's memory in use (total − free, by every process; for bflora alone what libtorch's caching
    /// allocator holds, which keeps its peak, plus the context); null on the CPU.
    /// </summary>
    public static long? MemoryInUse(Device device) =>
        device.type == DeviceType.CUDA ? Bitflip.Cuda.CudaDriver.Instance.MemoryInUse(device.index) : null;

    /// <summary>
    /// Fails when a parameter of <paramref name="module"/> is not on <paramref name="device"/>: a layer that made its own
    /// tensors elsewhere would otherwise fail deep inside the first forward with a device-mismatch message.
    /// </summary>
    public static void EnsureParametersOn(nn.Module module, Device device)
    {
        foreach (var (name, p) in module.named_parameters())
        {
            if (!Same(p.device, device))
                throw new InvalidOperationException($"parameter '{name}' is on {p.device}, the run computes on {device}");
        }
    }

    private static Device Cuda()
    {
        if (!cuda.is_available())
            throw new BfloraInputException(
                "training.device = \"cuda\" but this process sees no CUDA device: the libtorch it loaded is CPU-only or finds " +
                $"no GPU; set {LibTorchPreload.Variable} to a CUDA libtorch folder (e.g. an installed PyTorch's " +
                ".../site-packages/torch/lib), or use --device cpu");
        InitializeDeviceType(DeviceType.CUDA);
        // Index 0, not "current device" (-1): tensors report index 0, and device comparisons go by index.
        return new Device(DeviceType.CUDA, 0);
    }
}
