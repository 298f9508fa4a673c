using System.Text;
using System.Text.Json.Nodes;
using Bflora.Checkpoints;
using Bflora.Config;
using Bflora.Data;
using Bflora.Models.Llama3;

namespace Bflora.Distributed;

/// <summary>What the memory plan depends on besides the model's dimensions.</summary>
public sealed record PlanInputs(int World, bool FullTraining, int LoraRank, int LocalBatch, int SeqLen,
    IReadOnlyList<string> SkipPatterns, int MasterBytes, bool ActivationCheckpointing = true)
{
    public static PlanInputs From(BfloraConfig c, int world) => new(world, c.Training.Trainable == "full", c.Lora.R,
        c.Training.LocalBatchSize, c.Training.SeqLen, c.Bitflip.SkipPatterns, c.Training.MasterDtype == "bfloat16" ? 2 : 4,
        c.Parallelism.ActivationCheckpointing);
}

/// <summary>Per-rank bytes of one training step (see <see cref="MemoryPlanner"/> for every formula).</summary>
public sealed record MemoryPlan(int World, long Params, long GatheredBlock, string GatheredUnit, long Prefetch,
    long LoraMasterAndOptimizer, long Grads, long Activations, bool Checkpointed)
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
        Row(Checkpointed ? "activations (checkpointed)" : "activations", Activations);
        Row("total", Total);
        return sb.ToString();
    }
}

/// <summary>
/// The per-rank memory of FSDP training, from dimensions alone (no model files, nothing allocated).
/// The formulas follow what the trainer holds (FsdpModel; a test compares them): units of sharding are each
/// transformer block, the token embedding and the head (final norm + output); a unit's frozen weights and its LoRA
/// adapters are two flat buffers of which each rank keeps ceil(n / W) elements. At W = 1 nothing is sharded or gathered.
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
        long embedding = v * d;
        bool separateEmbedding = !a.TieEmbeddings;
        // A frozen, unflipped output head (skipped by skip_patterns) goes vocabulary-parallel: the embedding and the
        // output are sharded by rows, ceil(V / W)·d each, and never gathered; the head unit is the final norm alone.
        // Otherwise (and always in full training, where the head trains) the head unit is norm + output (tied: + the
        // shared matrix) and is gathered, as is the embedding.
        bool vocabParallel = !p.FullTraining && !Converted("output", p.SkipPatterns);
        long headFrozen = vocabParallel ? d : d + v * d;

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

        // Parameters as the trainer (FsdpModel) stores them: per unit (each block, the embedding, the head) a flat bf16
        // shard of its frozen weights and one of its LoRA adapters, ceil(n / W) elements each. W = 1: everything whole.
        long frozenElems = a.NLayers * Shard(block, w) + Shard(headFrozen, w) + (vocabParallel
            ? (separateEmbedding ? 2 : 1) * Shard(v, w) * d
            : separateEmbedding ? Shard(embedding, w) : 0);
        long loraElems = loraPerLayer.Sum(x => Shard(x, w)) + Shard(loraHead, w);
        long parameters = 2 * (frozenElems + loraElems);

        // Trainable elements per unit: LoRA adapters, or in full mode every weight.
        long trainableShard, largestTrainableUnit;
        if (p.FullTraining)
        {
            trainableShard = frozenElems;
            largestTrainableUnit = Math.Max(Math.Max(block, headFrozen), separateEmbedding ? embedding : 0);
        }
        else
        {
            trainableShard = loraElems;
            largestTrainableUnit = Math.Max(loraPerLayer.DefaultIfEmpty(0).Max(), loraHead);
        }
        // fp32 (or master_dtype) master copy plus AdamW's m and v, each only for this rank's shard.
        long optimizer = 3L * p.MasterBytes * trainableShard;
        // fp32 gradients of the shard, plus (W > 1) the largest unit's padded unsharded gradient (the reduce-scatter's
        // input), one shard receiving each micro-batch's sum before it is added, and the ring reduce-scatter's two fp32
        // chunk buffers (MpiCollectives keeps them between calls).
        long grads = 4 * trainableShard
                     + (w > 1 ? 4 * Padded(largestTrainableUnit, w) + 3 * 4 * Shard(largestTrainableUnit, w) : 0);

        // Gather buffers (W > 1): two, by unit parity — block i uses buffer i mod 2, the embedding buffer 1, the head
        // buffer L mod 2 — each as large as its largest unit's padded frozen part plus its largest padded LoRA part.
        // One holds the unit computing, the other the prefetched next unit.
        long[] frozenMax = new long[2], loraMax = new long[2];
        void Fits(int parity, long frozen, long lora)
        {
            frozenMax[parity] = Math.Max(frozenMax[parity], Padded(frozen, w));
            loraMax[parity] = Math.Max(loraMax[parity], Padded(lora, w));
        }
        for (int l = 0; l < a.NLayers; l++) Fits(l % 2, block, loraPerLayer[l]);
        if (separateEmbedding && !vocabParallel) Fits(1, embedding, 0);
        Fits(a.NLayers % 2, headFrozen, loraHead);
        long[] buffers = { 2 * (frozenMax[0] + loraMax[0]), 2 * (frozenMax[1] + loraMax[1]) };
        long gathered = w > 1 ? buffers.Max() : 0;
        long prefetch = w > 1 ? buffers.Min() : 0;
        string unit = !vocabParallel && Math.Max(headFrozen, separateEmbedding ? embedding : 0) > block ? "output" : "transformer block";

        // Activations (bf16 = 2 bytes per element, per token). At W > 1 blocks are checkpointed:
        //   kept for backward: every layer's block input, L·d;
        //   one block recomputed during backward holds its whole intermediate set:
        //     attention_norm out d, flipped inputs of wq/wk/wv 3d, q/k/v d + 2·kvd, RoPE'd q/k d + kvd,
        //     k/v repeated to all heads 2d (SDPA here has no GQA flag), attention out d, flipped wo input d,
        //     residual d, ffn_norm out d, flipped w1/w3 inputs 2d, w1/w3 outputs, SiLU, product 4F, flipped w2 input F,
        //     the LoRA x·Aᵀ of 7 Linears 7r  → 14d + 3·kvd + 5F + 7r, plus flash-attention's fp32 log-sum-exp per head;
        //   head: final norm out d in bf16, logits in bf16 (2 B) + fp32 log-softmax (4 B) + fp32 logit gradient (4 B) per vocab entry.
        // At W = 1, or without checkpointing, nothing is recomputed: every block keeps its whole set (the LoRA layers
        // keep no merged weight).
        long r7 = p.FullTraining ? 0 : 7L * p.LoraRank;
        long blockSet = 2 * tokens * (14 * d + 3 * kvd + 5 * f + r7) + 4 * tokens * a.NHeads;
        long blocks = w > 1 && p.ActivationCheckpointing ? 2 * a.NLayers * tokens * d + blockSet : a.NLayers * blockSet;
        long headActs = tokens * (2 * d + 10 * v);
        // Vocab-parallel at W > 1: every rank's final hidden states gathered (bf16) with their bf16 gradient and its
        // fp32 copy for the reduce-scatter, W·tokens·d each; the logits stay W·tokens·ceil(V/W) ≈ tokens·V but their
        // log-sum-exp is taken in fp32: bf16 logits, the fp32 copy kept for backward, the backward's softmax and its
        // product with the incoming gradient (fp32), the bf16 logit gradient: 16 bytes per logit instead of 10.
        if (vocabParallel && w > 1) headActs = tokens * 2 * d + 16 * w * tokens * Shard(v, w) + w * tokens * d * (2 + 2 + 4);
        long activations = blocks + headActs;

        return new MemoryPlan(p.World, parameters, gathered, unit, prefetch, optimizer, grads, activations,
            w > 1 && p.ActivationCheckpointing);
    }

    private static long Shard(long n, long world) => (n + world - 1) / world;

    private static long Padded(long n, long world) => Shard(n, world) * world;

    private static bool Converted(string name, IReadOnlyList<string> skip) => !skip.Any(s => name.Contains(s, StringComparison.Ordinal));
}
