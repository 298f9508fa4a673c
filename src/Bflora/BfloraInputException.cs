namespace Bflora;

/// <summary>A problem with what the user gave bflora (files, data, options); the message is one clear line.</summary>
public class BfloraInputException(string message, Exception? inner = null) : Exception(message, inner);
