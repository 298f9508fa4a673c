using Bflora.Data;

namespace Bflora.Tests.Data;

/// <summary>Loads the 9 MB tokenizer.json once for all Llama-3 tests, through the factory and a model-style folder.</summary>
public sealed class Llama3Fixture
{
    public Llama3Tokenizer Tokenizer { get; } =
        (Llama3Tokenizer)Tokenizers.Create("llama3", Path.GetDirectoryName(RepoPaths.Llama3TokenizerJson));
}
