using Bflora.Tests.Checkpoints;
using Bflora.Tests.Cli;
using Xunit;

namespace Bflora.Tests.Reliability;

/// <summary>
/// Bad configs through the real `bflora train`: one error line naming the key, exit 2, and nothing written, because the
/// config is checked before the output folder is touched. (Config/ConfigTests pins the same cases at the library level;
/// fsdp_degree against the world size under mpirun is in Distributed/MpiCollectivesTests.)
/// </summary>
public class ConfigErrorCliTests
{
    private const string Base = "[model]\nflavor = \"debug\"\ninit = \"random\"\ntokenizer = \"byte\"\n";

    [Theory]
    [InlineData("[training\nseq_len = 4", "TOML syntax error")]
    [InlineData("[training]\nseq_lenn = 4", "training.seq_lenn")]
    [InlineData("[trainin]\nseq_len = 4", "[trainin]")]
    [InlineData("[training]\nlr = \"fast\"", "training.lr")]
    [InlineData("[training]\nskip_nonfinite = 1", "training.skip_nonfinite")]
    [InlineData("[training]\nseq_len = 0", "training.seq_len")]
    [InlineData("[training]\nseq_len = -3", "training.seq_len")]
    [InlineData("[bitflip]\nw_p_exp = -0.5", "bitflip.w_p_exp")]
    [InlineData("[bitflip]\nx_p_frac = 1.5", "bitflip.x_p_frac")]
    [InlineData("[lora]\nr = -1", "lora.r")]
    [InlineData("[bitflip]\nw_zero_out_t = 0", "bitflip.w_zero_out_t")]
    [InlineData("[bitflip]\nx_zero_out_t = -1.0", "bitflip.x_zero_out_t")]
    public void A_bad_config_is_one_error_line_naming_the_key_and_writes_nothing(string section, string named)
    {
        using var dir = new TempFolder();
        string config = dir.File("bad.toml"), output = dir.File("run");
        File.WriteAllText(config, Base + section + "\n");
        var r = CliRunner.Run(["train", "--config", config, "--steps", "1", "--out", output], CleanError.Timeout);
        CleanError.Check(r, named);
        Assert.False(Directory.Exists(output));
    }

    [Fact]
    public void A_missing_config_file_is_named()
    {
        using var dir = new TempFolder();
        var r = CliRunner.Run(["train", "--config", dir.File("none.toml"), "--out", dir.File("run")], CleanError.Timeout);
        CleanError.Check(r, "config file not found", "none.toml");
        Assert.False(Directory.Exists(dir.File("run")));
    }
}
