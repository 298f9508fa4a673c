namespace Bflora.Data;

public static class Tokenizers
{
    /// <summary>
    /// <paramref name="kind"/> is the config's <c>[model] tokenizer</c>: "byte" needs no file; "llama3" reads
    /// <paramref name="tokenizerJsonPath"/> (a tokenizer.json, or a model folder holding one).
    /// </summary>
    public static ITokenizer Create(string kind, string? tokenizerJsonPath) => kind switch
    {
        "byte" => new ByteTokenizer(),
        "llama3" => Llama3Tokenizer.Load(ResolveJson(tokenizerJsonPath)),
        _ => throw new ArgumentException($"unknown tokenizer '{kind}' (expected \"llama3\" or \"byte\")", nameof(kind)),
    };

    private static string ResolveJson(string? path)
    {
        if (string.IsNullOrEmpty(path))
            throw new ArgumentException("the llama3 tokenizer needs the path of a tokenizer.json");
        return Directory.Exists(path) ? Path.Combine(path, "tokenizer.json") : path;
    }
}
