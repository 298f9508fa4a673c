namespace Bflora.Training;

/// <summary>
/// This process's resident memory as Linux reports it (/proc/self/status): what the memory plan is checked against.
/// Elsewhere both read 0.
/// </summary>
public static class ProcessMemory
{
    /// <summary>Resident set size now, in bytes (VmRSS).</summary>
    public static long Resident() => Read("VmRSS:");

    /// <summary>The largest resident set size so far, in bytes (VmHWM, the high-water mark).</summary>
    public static long Peak() => Read("VmHWM:");

    static long Read(string key)
    {
        const string status = "/proc/self/status";
        if (!File.Exists(status)) return 0;
        foreach (string line in File.ReadLines(status))
            if (line.StartsWith(key, StringComparison.Ordinal))
                return long.Parse(line[key.Length..].Trim().Split(' ')[0]) * 1024;   // "VmRSS:   123456 kB"
        return 0;
    }
}
