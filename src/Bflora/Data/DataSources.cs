using Bflora.Config;

namespace Bflora.Data;

public static class DataSources
{
    /// <summary>The documents of [data]: a local path, or a hub dataset id found in the local HF cache.</summary>
    public static TextSource Open(BfloraConfig config) =>
        new(DataLocator.Resolve(config.Data.Path), config.Data.TextField);
}
