using System.Text;

namespace Bflora;

/// <summary>
/// Keeps an error message on one line: the CLI prints the first line only, and a key, tensor name or value read from
/// a broken file may hold newlines or other control characters, which are written as escapes instead.
/// </summary>
internal static class OneLine
{
    public static string Of(string message)
    {
        if (!message.Any(char.IsControl)) return message;
        var text = new StringBuilder(message.Length + 8);
        foreach (char c in message)
        {
            text.Append(c switch
            {
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                _ when char.IsControl(c) => $"\\u{(int)c:x4}",
                _ => c.ToString(),
            });
        }
        return text.ToString();
    }
}
