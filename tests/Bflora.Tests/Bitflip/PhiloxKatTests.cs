using Bflora.Bitflip;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Bflora.Tests.Bitflip;

/// <summary>Known-answer vectors of SEMANTICS.md §1, which were checked against the real Triton kernel.</summary>
public class PhiloxKatTests
{
    public static IEnumerable<object[]> PhiloxAnswers() =>
        FlipSelfTest.PhiloxAnswers.Select(a => new object[] { a.Key0, a.Counter0, a.Words });

    [Theory]
    [MemberData(nameof(PhiloxAnswers))]
    public void Philox4x32_10_matches_known_answers(uint key0, uint counter0, uint[] words)
    {
        Assert.Equal((words[0], words[1], words[2], words[3]), Philox.Block(counter0, 0, 0, 0, key0, 0, 10));
    }

    [Fact]
    public void Negative_seed_sign_extends_into_the_high_key_word()
    {
        Assert.Equal((0xFFFFFFFFu, 0xFFFFFFFFu), Philox.Key(-1));
        Assert.Equal((42u, 0u), Philox.Key(42));
    }

    [Theory]
    [InlineData(1, 10)] [InlineData(12, 10)] [InlineData(13, 12)] [InlineData(18, 12)]
    [InlineData(19, 16)] [InlineData(24, 16)] [InlineData(25, 30)]
    public void Rounds_follow_the_halves(int halves, int rounds) => Assert.Equal(rounds, Philox.RoundsFor(halves));

    static uint[] FlipZerosBf16(int halves, bool fast, int count)
    {
        var op = new FlipOp(halves, halves, 42, 43, null, FlipRng.Philox);
        if (!fast) return ReferenceFlip.Apply(new uint[count], FlipFormat.BFloat16, op);
        using var scope = torch.NewDisposeScope();
        return TensorBits.ReadWords(BitFlip.Flip(torch.zeros(count, ScalarType.BFloat16), op));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Bf16_zeros_n12_first_flips_match(bool fast)
    {
        var words = FlipZerosBf16(12, fast, 4096);
        var nonZero = Enumerable.Range(0, 2338).Where(i => words[i] != 0).Select(i => (i, words[i])).ToArray();
        Assert.Equal(FlipSelfTest.FirstFlipsBf16N12, nonZero);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Bf16_zeros_n16_first_flip_matches(bool fast)
    {
        var words = FlipZerosBf16(16, fast, 4096);
        int first = Array.FindIndex(words, w => w != 0);
        Assert.Equal(3189, first);
        Assert.Equal(0x0200u, words[first]);
    }

    [Theory]
    [InlineData(2.44140625e-4, 12)]
    [InlineData(1.526e-5, 16)]
    [InlineData(1.52587890625e-05, 16)]
    [InlineData(0.1, 4)]
    [InlineData(0.7, 1)]
    [InlineData(0.5, 1)]
    [InlineData(1.0, 0)]
    public void Probability_snaps_down_to_a_power_of_half(double p, int halves)
    {
        Assert.Equal(halves, FlipProbability.Halves(p));
        Assert.Equal(Math.ScaleB(1.0, -halves), FlipProbability.Snapped(p));
    }

    [Fact]
    public void Probability_zero_is_off_and_out_of_range_is_rejected()
    {
        Assert.Null(FlipProbability.Halves(0));
        Assert.Equal(0.0, FlipProbability.Snapped(0));
        Assert.True(FlipProbability.IsExact(0.0625));
        Assert.False(FlipProbability.IsExact(0.1));
        Assert.Throws<ArgumentException>(() => FlipProbability.Halves(-0.1));
        Assert.Throws<ArgumentException>(() => FlipProbability.Halves(1.5));
        Assert.Throws<ArgumentException>(() => FlipProbability.Halves(double.NaN));
    }
}
