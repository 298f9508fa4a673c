using Bflora.Data;

namespace Bflora.Tests.Data;

/// <summary>Loads the 9 MB tokenizer.json once for all Llama-3 tests.</summary>
public sealed class Llama3Fixture
{
    public Llama3Tokenizer Tokenizer { get; } = Llama3Tokenizer.Load(RepoPaths.Llama3TokenizerJson);
}
