using System.Text;
using System.Text.Json.Nodes;
using Bflora.Checkpoints;
using Bflora.Config;
using Bflora.Data;
using Bflora.Models.Llama3;

namespace Bflora.Distributed;

/// <summary>What the memory plan depends on besides the model's dimensions.</summary>
public sealed record PlanInputs(int World, bool FullTraining, int LoraRank, int LocalBatch, int SeqLen,
    IReadOnlyList<string> SkipPatterns, int MasterBytes)
{
    public static PlanInputs From(BfloraConfig c, int world) => new(world, c.Training.Trainable == "full", c.Lora.R,
        c.Training.LocalBatchSize, c.Training.SeqLen, c.Bitflip.SkipPatterns, c.Training.MasterDtype == "bfloat16" ? 2 : 4);
}

/// <summary>Per-rank bytes of one training step (see <see cref="MemoryPlanner"/> for every formula).</summary>
public sealed record MemoryPlan(int World, long Params, long GatheredBlock, string GatheredUnit, long Prefetch,
    long LoraMasterAndOptimizer, long Grads, long Activations)
{
    public long Total => Params + GatheredBlock + Prefetch + LoraMasterAndOptimizer + Grads + Activations;

    public string ToJson() => new JsonObject
    {
        ["world"] = World,
        ["per_rank"] = new JsonObject
        {
            ["params"] = Params, ["gathered_block"] = GatheredBlock, ["gathered_unit"] = GatheredUnit,
            ["prefetch"] = Prefetch, ["lora_master_and_optimizer"] = LoraMasterAndOptimizer, ["grads"] = Grads,
            ["activations"] = Activations, ["total"] = Total,
        },
    }.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true });

    public string ToTable(string title)
    {
        var sb = new StringBuilder();
        sb.AppendLine(title);
        void Row(string name, long bytes) => sb.AppendLine($"  {name,-44} {bytes / (double)(1L << 30),10:F2} GiB {bytes,18:N0} B");
        Row("params (bf16 shard)", Params);
        Row($"gathered block (bf16, {GatheredUnit})", GatheredBlock);
        Row("prefetch (next block, bf16)", Prefetch);
        Row("master + AdamW m, v (shard)", LoraMasterAndOptimizer);
        Row("grads (fp32 shard + one unsharded unit)", Grads);
        Row("activations (checkpointed)", Activations);
        Row("total", Total);
        return sb.ToString();
    }
}

/// <summary>
/// The per-rank memory of FSDP training, from dimensions alone (no model files, nothing allocated).
/// Units of sharding: each transformer block, the token embedding, the output head and the final norm; a unit of n
/// elements keeps ceil(n / W) of them per rank (embedding and output split by vocabulary rows: ceil(V / W)·d).
/// At W = 1 nothing is sharded or gathered.
/// </summary>
public static class MemoryPlanner
{
    /// <summary>The seven Linears of a block that the converter can turn into BitFlipLinearLora (by their names).</summary>
    private static readonly string[] BlockLinears =
        { "attention.wq", "attention.wk", "attention.wv", "attention.wo", "feed_forward.w1", "feed_forward.w2", "feed_forward.w3" };

    /// <summary>Model dimensions from [model] without loading weights: the flavor, else the checkpoint's config.json.</summary>
    public static ModelArgs ResolveArgs(BfloraConfig config)
    {
        if (config.Model.Flavor is { } flavor)
        {
            var args = Flavors.Get(flavor);
            return args.VocabSize != 0 ? args
                : args with { VocabSize = config.Model.Tokenizer == "byte" ? new ByteTokenizer().VocabSize : Flavors.Llama3Vocab };
        }
        if (config.Model.HfModelPath is not { } path)
            throw new BfloraInputException("plan needs model.flavor, or model.hf_model_path to a folder with config.json");
        string json = Path.Combine(HfHub.ResolveModel(path), "config.json");
        if (!File.Exists(json)) throw new BfloraInputException($"plan needs model.flavor, or a config.json in {Path.GetDirectoryName(json)}");
        return HfConfig.Read(json);
    }

    public static MemoryPlan Compute(ModelArgs a, PlanInputs p)
    {
        if (p.World < 1) throw new BfloraInputException($"--world must be at least 1, got {p.World}");
        long w = p.World, d = a.Dim, v = a.VocabSize, f = a.FfnHidden, kvd = (long)a.NKvHeads * a.HeadDim;
        long tokens = (long)p.LocalBatch * p.SeqLen;

        // Base weights of one block: wq, wo (d·d), wk, wv (d·kvd), w1, w2, w3 (d·F), two RMSNorm weights.
        long block = 2 * d * d + 2 * d * kvd + 3 * d * f + 2 * d;
        long head = v * d;                                    // the output head (= the embedding when tied)
        long embeddingRows = a.TieEmbeddings ? 1 : 2;         // embedding and output, each split by vocab rows
        long paramElems = a.NLayers * Shard(block, w) + embeddingRows * Shard(v, w) * d + Shard(d, w);
        long parameters = 2 * paramElems;

        // LoRA on a converted Linear [out, in]: A [r, in] + B [out, r]. Skip patterns match names as the converter does.
        long[] loraPerLayer = new long[a.NLayers];
        long loraHead = 0;
        if (!p.FullTraining)
        {
            long[] inDims = { d, d, d, d, d, f, d }, outDims = { d, kvd, kvd, d, f, d, f };
            for (int l = 0; l < a.NLayers; l++)
                for (int i = 0; i < BlockLinears.Length; i++)
                    if (Converted($"layers.{l}.{BlockLinears[i]}", p.SkipPatterns)) loraPerLayer[l] += p.LoraRank * (inDims[i] + outDims[i]);
            if (Converted("output", p.SkipPatterns)) loraHead = p.LoraRank * (d + v);
        }

        // Trainable elements per unit: LoRA adapters, or in full mode every weight.
        long trainableShard, largestTrainableUnit;
        if (p.FullTraining)
        {
            trainableShard = paramElems;
            largestTrainableUnit = Math.Max(block, head);
        }
        else
        {
            trainableShard = loraPerLayer.Sum(x => Shard(x, w)) + Shard(loraHead, w);
            largestTrainableUnit = Math.Max(loraPerLayer.DefaultIfEmpty(0).Max(), loraHead);
        }
        // fp32 (or master_dtype) master copy plus AdamW's m and v, each only for this rank's shard.
        long optimizer = 3L * p.MasterBytes * trainableShard;
        // fp32 gradients of the shard, plus (W > 1) the largest unit's unsharded gradient (the reduce-scatter's input)
        // and the ring reduce-scatter's two fp32 chunk buffers (MpiCollectives keeps them between calls).
        long grads = 4 * trainableShard + (w > 1 ? 4 * largestTrainableUnit + 2 * 4 * Shard(largestTrainableUnit, w) : 0);

        // All-gathered units: each block (with its LoRA's bf16 copy) and the output head. The embedding is never
        // gathered: a rank looks its vocab rows up and the [B,S,d] results are summed across ranks.
        long gatheredBlock = 2 * (block + loraPerLayer.DefaultIfEmpty(0).Max());
        long gatheredHead = 2 * (head + loraHead);
        long gathered = w > 1 ? Math.Max(gatheredBlock, gatheredHead) : 0;
        string unit = gatheredHead > gatheredBlock ? "output" : "transformer block";
        // The next block's all-gather runs (non-blocking) while this one computes, so two gathered blocks coexist.
        long prefetch = w > 1 ? gatheredBlock : 0;

        // Activations with checkpointing (bf16 = 2 bytes per element, per token):
        //   kept for backward: every layer's block input, L·d;
        //   one block recomputed during backward holds its whole intermediate set:
        //     attention_norm out d, flipped inputs of wq/wk/wv 3d, q/k/v d + 2·kvd, RoPE'd q/k d + kvd,
        //     k/v repeated to all heads 2d (SDPA here has no GQA flag), attention out d, flipped wo input d,
        //     residual d, ffn_norm out d, flipped w1/w3 inputs 2d, w1/w3 outputs, SiLU, product 4F, flipped w2 input F,
        //     the LoRA x·Aᵀ of 7 Linears 7r  → 14d + 3·kvd + 5F + 7r, plus flash-attention's fp32 log-sum-exp per head;
        //   head: final norm out d in bf16, logits in bf16 (2 B) + fp32 log-softmax (4 B) + fp32 logit gradient (4 B) per vocab entry.
        long r7 = p.FullTraining ? 0 : 7L * p.LoraRank;
        long kept = 2 * a.NLayers * tokens * d;
        long recompute = 2 * tokens * (14 * d + 3 * kvd + 5 * f + r7) + 4 * tokens * a.NHeads;
        long headActs = tokens * (2 * d + 10 * v);
        long activations = kept + recompute + headActs;

        return new MemoryPlan(p.World, parameters, gathered, unit, prefetch, optimizer, grads, activations);
    }

    private static long Shard(long n, long world) => (n + world - 1) / world;

    private static bool Converted(string name, IReadOnlyList<string> skip) => !skip.Any(s => name.Contains(s, StringComparison.Ordinal));
}
