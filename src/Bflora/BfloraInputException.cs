namespace Bflora;

/// <summary>A problem with what the user gave bflora (files, data, options); the message is one clear line.</summary>
// Control characters in it (a quoted piece of a broken file, say) are escaped, so it stays one line.
public class BfloraInputException(string message, Exception? inner = null) : Exception(OneLine.Of(message), inner);
