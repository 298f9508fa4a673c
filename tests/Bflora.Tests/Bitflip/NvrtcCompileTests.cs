using System.Text;
using Bflora.Bitflip.Cuda;
using Xunit;

namespace Bflora.Tests.Bitflip;

/// <summary>
/// flip_kernels.cu through NVRTC for real, with the options and the binding the GPU path uses: compiling needs no GPU,
/// only libnvrtc (BFLORA_NVRTC, or the copy ./test.sh fetches into .test-tools/nvrtc). What runs the kernels on a
/// GPU is left to `bflora selftest-gpu`.
/// </summary>
public class NvrtcCompileTests
{
    static string Library()
    {
        if (Environment.GetEnvironmentVariable("BFLORA_NVRTC") is { Length: > 0 } given) return given;
        string fetched = RepoPaths.Of(".test-tools", "nvrtc", "libnvrtc.so.11.2");
        Assert.True(File.Exists(fetched), $"no NVRTC: run ./test.sh once (it fetches {fetched}) or set BFLORA_NVRTC");
        return fetched;
    }

    [Theory]
    [InlineData(8, 0)]
    [InlineData(9, 0)]
    public void Kernel_source_compiles_to_a_cubin_holding_every_kernel(int major, int minor)
    {
        var nvrtc = new Nvrtc(Library());
        var cubin = nvrtc.CompileToCubin(FlipKernelSource.Text, "flip_kernels.cu", CudaFlipLauncher.CompileOptions(major, minor));
        string text = Encoding.ASCII.GetString(cubin);
        Assert.StartsWith("\u007fELF", text);
        foreach (var kernel in Enum.GetValues<FlipKernel>())
            Assert.Contains(CudaFlipLauncher.KernelName(kernel) + "\0", text);
    }

    [Fact]
    public void A_compile_error_carries_nvrtc_log()
    {
        var nvrtc = new Nvrtc(Library());
        var error = Assert.Throws<InvalidOperationException>(() =>
            nvrtc.CompileToCubin("extern \"C\" __global__ void k() { undeclared_name(); }", "broken.cu",
                CudaFlipLauncher.CompileOptions(9, 0)));
        Assert.Contains("broken.cu", error.Message);
        Assert.Contains("undeclared_name", error.Message);
    }

    [Fact]
    public void A_missing_library_is_one_clear_error_naming_it()
    {
        var error = Assert.Throws<BfloraInputException>(() => new Nvrtc("/nonexistent/libnvrtc.so.13"));
        Assert.Contains("NVRTC", error.Message);
        Assert.Contains("/nonexistent/libnvrtc.so.13", error.Message);
    }

    /// <summary>A PyTorch install's layout: NVRTC in a wheel under site-packages/nvidia, found from torch/lib.</summary>
    [Fact]
    public void Nvrtc_is_found_in_the_wheels_beside_the_libtorch_folder()
    {
        string library = Library();
        string site = Path.Combine(Path.GetTempPath(), $"bflora-site-{Guid.NewGuid():N}");
        string wheel = Path.Combine(site, "nvidia", "cuda_nvrtc", "lib");
        Directory.CreateDirectory(Path.Combine(site, "torch", "lib"));
        Directory.CreateDirectory(wheel);
        foreach (var file in Directory.EnumerateFiles(Path.GetDirectoryName(library)!, "libnvrtc*"))
            File.Copy(file, Path.Combine(wheel, Path.GetFileName(file)));
        string? before = Environment.GetEnvironmentVariable("BFLORA_LIBTORCH"), given = Environment.GetEnvironmentVariable("BFLORA_NVRTC");
        try
        {
            Environment.SetEnvironmentVariable("BFLORA_NVRTC", null);
            Environment.SetEnvironmentVariable("BFLORA_LIBTORCH", Path.Combine(site, "torch", "lib"));
            var nvrtc = new Nvrtc();
            Assert.StartsWith(wheel, nvrtc.LibraryPath);
            Assert.Equal(11, nvrtc.Version.Major);
        }
        finally
        {
            Environment.SetEnvironmentVariable("BFLORA_LIBTORCH", before);
            Environment.SetEnvironmentVariable("BFLORA_NVRTC", given);
            Directory.Delete(site, recursive: true);
        }
    }
}
