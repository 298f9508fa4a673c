using Bflora.Bitflip;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Bflora.Tests.Bitflip;

public class FastMaskStreamTests
{
    [Fact]
    public void Portable_log_agrees_with_libm_to_a_few_ulp()
    {
        Assert.Equal(0.0, FastMaskStream.Log(1.0));
        var rng = new Random(17);
        for (int i = 0; i < 100000; i++)
        {
            double u = i < 1000 ? Math.ScaleB(1.0 + rng.NextDouble(), -rng.Next(0, 1070)) : rng.NextDouble() + 1e-300;
            double expected = Math.Log(u);
            Assert.True(Math.Abs(FastMaskStream.Log(u) - expected) <= 4e-16 * Math.Max(1.0, Math.Abs(expected)),
                $"ln({u:R}) = {expected:R}, got {FastMaskStream.Log(u):R}");
        }
        Assert.Equal(Math.Log(1 - 1.0 / 4096), FastMaskStream.LogKeep(12), 15);
        Assert.True(Math.Abs(-Math.ScaleB(1.0, -40) - FastMaskStream.LogKeep(40)) < 1e-24);
    }

    /// <summary>
    /// Pins the fast generator's definition (stream key and counter, uniform, gap rule, bit order): a change here
    /// changes every mask, so it must be deliberate.
    /// </summary>
    [Fact]
    public void Fast_generator_known_answers_bf16_zeros()
    {
        using var scope = torch.NewDisposeScope();
        var words = TensorBits.ReadWords(BitFlip.Flip(torch.zeros(1 << 17, ScalarType.BFloat16),
            new FlipOp(12, 12, 42, 43, null, FlipRng.Fast)));
        var first = Enumerable.Range(0, words.Length).Where(i => words[i] != 0).Take(6).Select(i => (i, words[i]));
        Assert.Equal(FastKnownAnswers, first.ToArray());
        var secondBlock = Enumerable.Range(1 << 16, 1 << 16).First(i => words[i] != 0);
        Assert.Equal(SecondBlockFirst, (secondBlock, words[secondBlock]));
    }

    static readonly (int, uint)[] FastKnownAnswers =
        { (82, 0x0100), (168, 0x1000), (257, 0x0004), (449, 0x0001), (555, 0x0001), (675, 0x0040) };
    static readonly (int, uint) SecondBlockFirst = (65956, 0x4000);
}
