using System.Buffers.Binary;
using Bflora.Checkpoints;
using Bflora.Lora;
using Bflora.Tests.Checkpoints;
using Bflora.Tests.Training;
using Bflora.Training;
using Xunit;
using static TorchSharp.torch;

namespace Bflora.Tests.Reliability;

/// <summary>
/// Seeded mutations of what `--resume` and `eval --adapter` read back: a PEFT adapter's adapter_config.json and its
/// safetensors, and trainer_state/state.json. Each either loads or fails with one input-error line, never a
/// NullReference, InvalidOperation, Format or Overflow exception from deep inside. A failure names seed and iteration.
/// </summary>
public sealed class CheckpointFuzzTests : IDisposable
{
    private const int Seed = 8;
    private static readonly Type[] InputErrors = [typeof(BfloraInputException), typeof(CheckpointFormatException)];
    private readonly TempFolder _dir = new();
    private readonly string _checkpoint;

    public CheckpointFuzzTests()
    {
        var result = TrainRun.Execute(TrainingKit.Config("lora", steps: 2), new TrainOptions(_dir.File("run")),
            new PlainProgress(TextWriter.Null));
        _checkpoint = result.LastCheckpoint;
    }

    public void Dispose() => _dir.Dispose();

    /// <summary>A copy of the checkpoint to break, so each test starts from the valid one.</summary>
    private string Copy(string name)
    {
        string copy = _dir.File(name);
        foreach (string file in Directory.GetFiles(_checkpoint, "*", SearchOption.AllDirectories))
        {
            string target = Path.Combine(copy, Path.GetRelativePath(_checkpoint, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }
        return copy;
    }

    /// <summary>
    /// Breaks <paramref name="relativeFile"/> of a fresh copy of the checkpoint in many seeded ways and hands the folder
    /// to <paramref name="load"/> each time, with a live session of the run's shape.
    /// </summary>
    private void Fuzz(string relativeFile, Func<Random, byte[], byte[]> mutate, Action<string, TrainingSession> load)
    {
        string folder = Copy(Path.GetFileNameWithoutExtension(relativeFile));
        string path = Path.Combine(folder, relativeFile);
        byte[] original = File.ReadAllBytes(path);
        using var session = TrainingSession.Open(TrainingKit.Config("lora", steps: 2));
        var rng = new Random(Seed);
        for (int i = 0; i < 1500; i++)
        {
            File.WriteAllBytes(path, mutate(rng, original));
            LoaderFuzzTests.ExpectClean(Seed, i, () =>
            {
                using var scope = NewDisposeScope();
                load(folder, session);
            }, InputErrors);
        }
    }

    private static byte[] MutateJson(Random rng, byte[] original) =>
        LoaderFuzzTests.Mutate(rng, original, LoaderFuzzTests.JsonTokens, 0, original.Length);

    [Fact]
    public void Mutated_adapter_configs_fail_only_with_input_errors() =>
        Fuzz("adapter_config.json", MutateJson, (folder, session) => PeftAdapter.Load(folder, session.Converted, session.Args));

    [Fact]
    public void A_repeated_key_in_an_adapter_config_is_an_input_error()
    {
        string folder = Copy("repeated");
        string path = Path.Combine(folder, "adapter_config.json");
        File.WriteAllText(path, File.ReadAllText(path).Replace("\"r\":", "\"r\": 4, \"r\":"));
        using var session = TrainingSession.Open(TrainingKit.Config("lora", steps: 2));
        var e = Assert.Throws<BfloraInputException>(() => PeftAdapter.Load(folder, session.Converted, session.Args));
        Assert.Contains("Duplicate property 'r'", e.Message);
    }

    [Fact]
    public void Mutated_adapter_weights_fail_only_with_input_errors() =>
        Fuzz("adapter_model.safetensors", (rng, original) =>
        {
            int headerEnd = 8 + (int)BinaryPrimitives.ReadUInt64LittleEndian(original);
            byte[] bytes = LoaderFuzzTests.Mutate(rng, original, LoaderFuzzTests.JsonTokens, 8, headerEnd);
            // Mostly keep the length field true to the mutated header, so the mutations reach the key and shape checks.
            if (rng.Next(4) != 0 && bytes.Length >= 8)
                BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)Math.Max(0, headerEnd - 8 + bytes.Length - original.Length));
            return bytes;
        }, (folder, session) => PeftAdapter.Load(folder, session.Converted, session.Args));

    [Fact]
    public void Mutated_trainer_states_fail_only_with_input_errors() =>
        Fuzz(Path.Combine("trainer_state", "state.json"), MutateJson, (folder, session) => Checkpointer.Load(folder, session));
}
