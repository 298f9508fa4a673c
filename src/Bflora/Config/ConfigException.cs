namespace Bflora.Config;

/// <summary>A user error in a config file or override; the message is one line naming the key.</summary>
public sealed class ConfigException(string message) : Exception(OneLine.Of(message));
