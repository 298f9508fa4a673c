using Bflora.Checkpoints;
using Bflora.Config;
using Bflora.Eval;
using Bflora.Models;
using Bflora.Models.Llama3;
using static TorchSharp.torch;

namespace Bflora.Lora;

/// <summary>`bflora export`: an adapter folder copied as a checked PEFT folder, or merged into an HF-layout model.</summary>
public static class AdapterExport
{
    /// <summary>Checks that <paramref name="folder"/> is a consistent PEFT LoRA adapter: every A has its B, ranks match r.</summary>
    public static PeftAdapterConfig Validate(string folder)
    {
        var config = PeftAdapter.ReadConfig(folder);
        var file = SafetensorsFile.Open(Path.Combine(folder, PeftAdapter.WeightsFile));
        int pairs = 0;
        foreach (string key in PeftAdapter.LoraAKeys(file, folder).ToList())
        {
            var a = file.Tensors[key];
            string bKey = key[..^".lora_A.weight".Length] + ".lora_B.weight";
            if (!file.Tensors.TryGetValue(bKey, out var b))
                throw new BfloraInputException($"{folder}: '{key}' has no matching '{bKey}'");
            if (a.Shape.Length != 2 || b.Shape.Length != 2 || a.Shape[0] != config.R || b.Shape[1] != config.R)
                throw new BfloraInputException($"{folder}: '{key}' / '{bKey}' do not have rank r = {config.R}");
            pairs++;
        }
        if (pairs == 0) throw new BfloraInputException($"{folder}: {PeftAdapter.WeightsFile} holds no LoRA weights");
        return config;
    }

    /// <summary>Copies a validated adapter into <paramref name="outFolder"/> (created or replaced file by file).</summary>
    public static void CopyAdapter(string adapterFolder, string outFolder)
    {
        Validate(adapterFolder);
        Directory.CreateDirectory(outFolder);
        foreach (var name in new[] { PeftAdapter.WeightsFile, PeftAdapter.ConfigFile })
        {
            string source = Path.Combine(adapterFolder, name);
            AtomicFile.Write(Path.Combine(outFolder, name), stream =>
            {
                using var input = File.OpenRead(source);
                input.CopyTo(stream);
            });
        }
    }

    /// <summary>HF's default shard size for save_pretrained (5 GB), so a merged 70B model is a familiar set of files.</summary>
    public const long MergedShardBytes = 5_000_000_000;

    /// <summary>
    /// Writes the base model of <paramref name="config"/> with the adapter merged in, W + (α/r)·B·A computed in fp32
    /// and rounded to bf16, as an HF-layout model folder (plus the model folder's tokenizer files, if it has any). The
    /// model is never held whole: each weight is read (or generated), merged and written in turn.
    /// </summary>
    public static void WriteMerged(BfloraConfig config, string adapterFolder, string outFolder)
    {
        var adapter = Validate(adapterFolder);
        var (tokenizer, args, modelFolder) = ModelBuilder.Resolve(config);
        var values = ModelBuilder.ParameterValues(config, args, modelFolder);
        List<(string Name, long[] Shape)> parameters;
        using (var meta = new Transformer(args, META, ScalarType.BFloat16))
            parameters = meta.named_parameters()
                .Where(p => !(p.name == "output.weight" && args.TieEmbeddings))
                .Select(p => (p.name, p.parameter.shape)).ToList();
        var weights = PeftAdapter.ReadWeights(adapterFolder, args, ScalarType.Float32);
        try
        {
            var shapes = parameters.ToDictionary(p => p.Name, p => p.Shape);
            foreach (var (name, (a, b)) in weights)
            {
                string key = name + ".weight";
                if (!shapes.TryGetValue(key, out var w))
                    throw new BfloraInputException($"{adapterFolder}: the model has no weight '{key}' to merge into");
                if (w[0] != b.shape[0] || w[1] != a.shape[1])
                    throw new BfloraInputException($"{adapterFolder}: the adapter of '{name}' does not fit its weight " +
                                                   $"[{string.Join(", ", w)}]");
            }
            double scaling = adapter.LoraAlpha / adapter.R;
            var sources = parameters.Select(p => new TensorSource(p.Name, ScalarType.BFloat16, p.Shape, () =>
            {
                var w = values(p.Name, p.Shape);
                if (!p.Name.EndsWith(".weight", StringComparison.Ordinal) ||
                    !weights.TryGetValue(p.Name[..^".weight".Length], out var ab)) return w;
                using var scope = NewDisposeScope();
                using (w) return w.to(ScalarType.Float32).add(ab.B.matmul(ab.A).mul(scaling)).to(ScalarType.BFloat16).MoveToOuterDisposeScope();
            })).ToList();
            LlamaHfCheckpoint.Export(outFolder, sources, args, tokenizer.BosId, tokenizer.EosId, MergedShardBytes);
        }
        finally
        {
            foreach (var (a, b) in weights.Values) { a.Dispose(); b.Dispose(); }
        }
        if (modelFolder is null) return;
        foreach (var name in new[] { "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json" })
        {
            string source = Path.Combine(modelFolder, name);
            if (File.Exists(source)) File.Copy(source, Path.Combine(outFolder, name), overwrite: true);
        }
    }
}
