using System.Text;

namespace Bflora.Data;

/// <summary>
/// Cuts a long document into pieces that tokenize, one after another, to exactly the ids of the whole document, so a
/// 1 GB text file never has to sit in memory at once. A cut is safe where the Llama-3 pre-tokenizer regex always ends a
/// piece and starts a new one without looking across the cut:
/// after a line feed that is followed by a letter (the letter alternative cannot take a leading \n, and every
/// alternative that can match a \n stops before a letter), and between a letter and a following space (a letter run
/// ends there, and the space starts the next piece). Byte-level tokenization has no pre-tokenizer context at all.
/// Text with neither (no spaces and no line breaks for <see cref="HardLimitFactor"/>× the chunk size) is cut anyway
/// to keep memory bounded; only then can the ids at that one cut differ from whole-document tokenization.
/// </summary>
internal static class SafeChunker
{
    public const int HardLimitFactor = 4;

    public static IEnumerable<string> Split(TextReader reader, int chunkChars)
    {
        var pending = new StringBuilder();
        var block = new char[Math.Min(chunkChars, 1 << 16)];
        bool yielded = false;
        char previous = '\0';
        int lastSafeCut = 0; // in pending; 0 = none (a cut at 0 would make an empty piece)
        int read;
        while ((read = reader.Read(block, 0, block.Length)) > 0)
        {
            // Each character is looked at once, as it arrives, so pathological text costs linear time too.
            for (int i = 0; i < read; i++)
            {
                if (pending.Length + i > 0 && IsSafeCut(previous, block[i]))
                    lastSafeCut = pending.Length + i;
                previous = block[i];
            }
            pending.Append(block, 0, read);
            if (pending.Length < chunkChars)
                continue;
            int cut = lastSafeCut;
            if (cut == 0)
            {
                if (pending.Length < HardLimitFactor * chunkChars)
                    continue;
                cut = char.IsHighSurrogate(previous) ? pending.Length - 1 : pending.Length;
            }
            yield return pending.ToString(0, cut);
            yielded = true;
            pending.Remove(0, cut);
            // The cut was the last safe one, so the rest has none until more text arrives.
            lastSafeCut = 0;
        }
        // An empty document is still a document (it contributes its BOS).
        if (pending.Length > 0 || !yielded)
            yield return pending.ToString();
    }

    internal static bool IsSafeCut(char before, char after) =>
        (before == '\n' && char.IsLetter(after)) || (after == ' ' && char.IsLetter(before));
}
