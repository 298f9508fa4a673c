using Bflora.Devices;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Bflora.Models.Llama3;

/// <summary>
/// The Llama-3 decoder with torchtitan's parameter names (tok_embeddings, layers.N.attention.wq, …, norm, output).
/// Built on the meta device it allocates nothing; <see cref="SetParameter"/> then materialises one tensor at a time.
/// </summary>
public sealed class Transformer : nn.Module<Tensor, Tensor>
{
    private readonly TokenEmbedding tok_embeddings;
    private readonly ModuleList<TransformerBlock> layers;
    private readonly RmsNorm norm;
    private nn.Module<Tensor, Tensor> output;
    private Tensor? _ropeCos, _ropeSin;

    public ModelArgs Args { get; }

    public Transformer(ModelArgs args, Device device, ScalarType dtype = ScalarType.BFloat16, LinearFactory? linear = null)
        : base("Transformer")
    {
        args.Validate();
        Args = args;
        linear ??= LinearFactories.Plain(device, dtype);
        tok_embeddings = new TokenEmbedding(args.VocabSize, args.Dim, device, dtype);
        layers = new ModuleList<TransformerBlock>();
        for (int i = 0; i < args.NLayers; i++) layers.Add(new TransformerBlock(i, args, linear, device, dtype));
        norm = new RmsNorm(args.Dim, args.NormEps, device, dtype);
        output = linear("output", args.Dim, args.VocabSize);
        RegisterComponents();
    }

    public IReadOnlyList<TransformerBlock> Layers => layers.ToList();

    /// <summary>Every Linear slot with its fully qualified name, in registration order (the converter's order).</summary>
    public IEnumerable<(string Name, LinearHost Host, string LocalName)> LinearSlots()
    {
        for (int i = 0; i < layers.Count; i++)
        {
            foreach (var host in new LinearHost[] { layers[i].Attention, layers[i].FeedForward })
            {
                string prefix = host is Attention ? $"layers.{i}.attention" : $"layers.{i}.feed_forward";
                foreach (var local in host.LinearNames) yield return ($"{prefix}.{local}", host, local);
            }
        }
    }

    /// <summary>The output head (a Linear slot of its own; never bitflipped by default).</summary>
    public nn.Module<Tensor, Tensor> Output => output;

    public void ReplaceOutput(nn.Module<Tensor, Tensor> replacement)
    {
        output = replacement;
        var children = named_children().Select(c => c.name == "output" ? (c.name, (nn.Module)replacement) : c).ToList();
        ClearModules();
        foreach (var (name, child) in children) register_module(name, child);
    }

    /// <summary>
    /// Installs <paramref name="value"/> as the parameter <paramref name="name"/> (replacing a meta placeholder or an
    /// earlier value). The tensor is taken as is: the caller gives it the model's dtype and device.
    /// </summary>
    public void SetParameter(string name, Tensor value, bool requiresGrad = false)
    {
        int dot = name.LastIndexOf('.');
        string owner = dot < 0 ? "" : name[..dot], leaf = name[(dot + 1)..];
        var module = owner.Length == 0 ? this : named_modules().FirstOrDefault(m => m.name == owner).module
                     ?? throw new ArgumentException($"no module '{owner}' for parameter '{name}'");
        var expected = module.get_parameter(leaf)
                       ?? throw new ArgumentException($"module '{owner}' has no parameter '{leaf}'");
        if (!expected.shape.SequenceEqual(value.shape))
            throw new ArgumentException(
                $"parameter '{name}' has shape [{string.Join(", ", value.shape)}], expected [{string.Join(", ", expected.shape)}]");
        var parameter = new Parameter(value, requires_grad: requiresGrad);
        switch (module, leaf)
        {
            case (Linear l, "weight"): l.weight = parameter; break;
            case (TokenEmbedding e, "weight"): e.weight = parameter; break;
            case (RmsNorm n, "weight"): n.weight = parameter; break;
            case (IBaseWeightHolder h, "weight"): h.BaseWeight = parameter; break;
            default: throw new ArgumentException($"parameter '{name}' cannot be replaced on {module.GetType().Name}");
        }
    }

    /// <summary>Ties the output head to the token embedding (Llama-3.2-1B style); both then share one tensor.</summary>
    public void TieOutputToEmbedding()
    {
        if (output is not Linear head) throw new InvalidOperationException("only a plain output Linear can be tied");
        head.weight = tok_embeddings.weight;
    }

    /// <summary>Where the model computes: the device of its token embedding, so token ids are made there.</summary>
    public Device Device => tok_embeddings.weight.device;

    public Tensor Embed(Tensor tokens) => tok_embeddings.call(tokens);

    /// <summary>Final norm and output head: logits for the last block's output (a sharded trainer drives blocks itself).</summary>
    public Tensor Head(Tensor h) => output.call(norm.call(h));

    /// <summary>The final norm alone (a vocabulary-parallel trainer applies its own slice of the output head).</summary>
    public Tensor FinalNorm(Tensor h) => norm.call(h);

    /// <summary>Rotary tables covering <paramref name="seqLen"/> positions, grown on demand and kept.</summary>
    internal (Tensor Cos, Tensor Sin) RopeFor(long seqLen, Device device)
    {
        if (seqLen > Args.MaxSeqLen)
            throw new ArgumentException($"sequence length {seqLen} exceeds the model's maximum {Args.MaxSeqLen}");
        if (_ropeCos is null || _ropeCos.shape[0] < seqLen || !ComputeDevice.Same(_ropeCos.device, device))
        {
            _ropeCos?.Dispose();
            _ropeSin?.Dispose();
            var (cos, sin) = Rope.Tables((int)seqLen, Args.HeadDim, Args.RopeTheta, Args.RopeScaling);
            _ropeCos = cos.to(device).DetachFromDisposeScope();
            _ropeSin = sin.to(device).DetachFromDisposeScope();
        }
        return (_ropeCos, _ropeSin!);
    }

    /// <summary>Logits [B, S, vocab] in the model dtype for token ids [B, S].</summary>
    public override Tensor forward(Tensor tokens)
    {
        using var scope = NewDisposeScope();
        var (cos, sin) = RopeFor(tokens.shape[1], tokens.device);
        var h = tok_embeddings.call(tokens);
        foreach (var block in layers)
        {
            block.SetRope(cos, sin);
            h = block.call(h);
        }
        return Head(h).MoveToOuterDisposeScope();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _ropeCos?.Dispose();
            _ropeSin?.Dispose();
        }
        base.Dispose(disposing);
    }
}

/// <summary>A layer that wraps a frozen base weight (e.g. a bitflip/LoRA Linear) and lets it be replaced.</summary>
public interface IBaseWeightHolder
{
    Parameter BaseWeight { get; set; }
}
