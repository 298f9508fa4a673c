using Bflora.Bitflip;
using Bflora.Models.Llama3;
using Linear = TorchSharp.Modules.Linear;
using static TorchSharp.torch;

namespace Bflora.Lora;

/// <summary>What the converter puts in place of each eligible Linear.</summary>
public sealed record ConversionOptions(FlipSettings Flips, int Rank, double Alpha, IReadOnlyList<string> SkipPatterns,
    long LoraSeed = 0);

/// <summary>The converted layers, by fully qualified name in registration order, and the step counter they share.</summary>
public sealed record ConvertedModel(FlipStep Step, IReadOnlyList<(string Name, BitFlipLinearLora Layer)> Layers);

/// <summary>
/// Replaces every Linear whose name contains none of the skip patterns with a <see cref="BitFlipLinearLora"/> around
/// the same (already materialised) weight. Layers are numbered 0, 1, … in registration order, which fixes their flip
/// seeds: 7 per Llama block (wq wk wv wo w1 w2 w3), so layer 7L+i of block L.
/// </summary>
public static class BitFlipConverter
{
    public static ConvertedModel Convert(Transformer model, ConversionOptions options)
    {
        var step = new FlipStep();
        var converted = new List<(string, BitFlipLinearLora)>();
        var slots = model.LinearSlots()
            .Select(s => (s.Name, Current: s.Host.GetLinear(s.LocalName), Replace: (Action<BitFlipLinearLora>)(l => s.Host.ReplaceLinear(s.LocalName, l))))
            .Append(("output", model.Output, l => model.ReplaceOutput(l)));
        foreach (var (name, current, replace) in slots.ToList())
        {
            if (options.SkipPatterns.Any(p => name.Contains(p, StringComparison.Ordinal))) continue;
            if (current is not Linear linear)
                throw new InvalidOperationException($"'{name}' is a {current.GetType().Name}, not a plain Linear; convert only once");
            int layerIdx = converted.Count;
            using var generator = new Generator(unchecked((ulong)(options.LoraSeed * 1_000_003L + layerIdx)));
            var layer = new BitFlipLinearLora(linear.weight!, linear.bias, options.Rank, options.Alpha, layerIdx,
                options.Flips, step, generator);
            replace(layer);
            converted.Add((name, layer));
        }
        return new ConvertedModel(step, converted);
    }
}
