using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;

namespace Bflora.Cli;

/// <summary>The command line's first error in the user's words, not the parser's CLR type names.</summary>
internal static class ParseErrors
{
    public static string Describe(ParseResult parse)
    {
        // A token the parser did not know explains the other errors ("bflora frob" also lacks a command), so it goes first.
        if (parse.UnmatchedTokens.Count > 0)
            return $"unknown command or argument '{parse.UnmatchedTokens[0]}' (see --help)";
        var error = parse.Errors[0];
        var option = error.SymbolResult switch
        {
            OptionResult o => o,
            ArgumentResult { Parent: OptionResult o } => o,
            _ => null,
        };
        if (option?.Tokens.FirstOrDefault(t => !Fits(option.Option.ValueType, t.Value)) is not { } token)
            return error.Message;
        string name = option.IdentifierToken?.Value ?? option.Option.Name;
        return $"{name} takes {Kind(option.Option.ValueType)}, not '{token.Value}'";
    }

    private static Type Underlying(Type type) => Nullable.GetUnderlyingType(type) ?? type;

    /// <summary>Whether <paramref name="text"/> reads as a value of the option's type; types not named here always fit.</summary>
    private static bool Fits(Type type, string text)
    {
        var t = Underlying(type);
        var invariant = CultureInfo.InvariantCulture;
        if (t == typeof(int)) return int.TryParse(text, NumberStyles.Integer, invariant, out _);
        if (t == typeof(long)) return long.TryParse(text, NumberStyles.Integer, invariant, out _);
        if (t == typeof(double)) return double.TryParse(text, NumberStyles.Float, invariant, out _);
        return true;
    }

    private static string Kind(Type type)
    {
        var t = Underlying(type);
        if (t == typeof(int)) return string.Create(CultureInfo.InvariantCulture, $"a whole number up to {int.MaxValue:N0}");
        if (t == typeof(long)) return "a whole number (64-bit)";
        return "a number";
    }
}
