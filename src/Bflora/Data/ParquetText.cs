using Parquet;
using Parquet.Schema;

namespace Bflora.Data;

/// <summary>
/// The documents of one Parquet file: one per row, from the top-level string column named by [data] text_field.
/// Row groups are read one at a time (only that group's column is in memory), so a multi-gigabyte shard streams.
/// </summary>
internal static class ParquetText
{
    /// <summary>
    /// The rows' texts from row <paramref name="skip"/> on; the skipped rows are yielded as null so the caller can count
    /// them. Whole row groups before <paramref name="skip"/> are counted from the footer and never decoded, which keeps
    /// a resume deep into a shard cheap.
    /// </summary>
    public static IEnumerable<string?> Rows(string file, string column, long skip)
    {
        using var stream = ParquetGuards.Open(file);
        ParquetGuards.CheckFooter(stream, file);
        var reader = Decode(file, "not a readable Parquet file",
                            () => ParquetReader.CreateAsync(stream, null, leaveStreamOpen: true).GetAwaiter().GetResult());
        // The reader is only asynchronously disposable, and an iterator cannot await.
        try
        {
            foreach (string? text in Rows(reader, file, column, skip))
                yield return text;
        }
        finally
        {
            reader.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
    }

    private static IEnumerable<string?> Rows(ParquetReader reader, string file, string column, long skip)
    {
        var field = TextField(Decode(file, "not a readable Parquet file", () => reader.Schema), file, column);
        long row = 0;
        for (int g = 0; g < reader.RowGroupCount; g++)
        {
            using var group = Decode(file, $"row group {g} is unreadable", () => reader.OpenRowGroupReader(g));
            long count = group.RowCount;
            if (count < 0 || count > Array.MaxLength)
                throw new InvalidDataException($"{file}: row group {g} claims {count} rows (a corrupt footer)");
            if (row + count <= skip)
            {
                for (long i = 0; i < count; i++) yield return null;
                row += count;
                continue;
            }
            var texts = new string?[count];
            Decode(file, "cannot read Parquet column",
                   () => group.ReadAsync(field, texts.AsMemory(), null, CancellationToken.None).AsTask().GetAwaiter().GetResult());
            foreach (string? text in texts)
            {
                // A null row is an error rather than a skipped document: skipping it would make document numbers (and so
                // resume positions) depend on decoding the rows that the footer-only skip above never reads.
                if (text is null && row >= skip)
                    throw new InvalidDataException($"{file} row {row}: column '{column}' is null");
                yield return row++ < skip ? null : text;
            }
        }
    }

    private static DataField TextField(ParquetSchema schema, string file, string column)
    {
        var field = schema.Fields.FirstOrDefault(f => f.Name == column);
        if (field is null)
            throw new InvalidDataException(
                $"{file}: no column '{column}' (set [data] text_field; columns: {string.Join(", ", schema.Fields.Select(f => f.Name))})");
        // Parquet.Net 6 reports UTF-8 columns as ReadOnlyMemory<char> (string in older files' schemas); binary is bytes.
        if (field is not DataField data || data.IsArray
            || (data.ClrType != typeof(string) && data.ClrType != typeof(ReadOnlyMemory<char>)))
            throw new InvalidDataException($"{file}: column '{column}' is {Describe(field)}, not a string column");
        return data;
    }

    private static string Describe(Field field) =>
        field is DataField d ? (d.IsArray ? $"a list of {TypeName(d.ClrType)}" : TypeName(d.ClrType)) : field.SchemaType.ToString();

    private static string TypeName(Type t) =>
        t.IsGenericType ? $"{t.Name[..t.Name.IndexOf('`')]}<{string.Join(",", t.GetGenericArguments().Select(TypeName))}>" : t.Name;

    /// <summary>
    /// One call into the Parquet library. Whatever it throws comes from the bytes it decodes (a corrupt footer
    /// gives an index out of range, a length that does not fit an overflow or an allocation failure), so it is one
    /// error naming the file.
    /// </summary>
    private static T Decode<T>(string file, string what, Func<T> call)
    {
        try
        {
            return call();
        }
        catch (Exception e)
        {
            throw new InvalidDataException($"{file}: {what} ({OneLine.Of(e.Message)})", e);
        }
    }

    private static void Decode(string file, string what, Action call) =>
        Decode(file, what, () => { call(); return 0; });
}
