using Bflora.Models.Llama3;
using TorchSharp;
using Linear = TorchSharp.Modules.Linear;
using static TorchSharp.torch;

namespace Bflora.Eval;

/// <summary>One profiled layer: its name and the largest |input| and |weight| seen (NaN as 0, Inf as 2^40).</summary>
public sealed record LayerMaxima(string Name, float Activation, float Weight);

/// <summary>
/// Magnitude profile of the Linears that the bitflip converter would convert: every forward input (all batches) and
/// every weight, in exact bf16 histograms. <see cref="Attach"/> swaps each such Linear for an observer that records its
/// input and then calls the very same Linear, so the model computes exactly what it computed before;
/// <see cref="Dispose"/> puts the Linears back.
/// </summary>
public sealed class Profiler : IDisposable
{
    private readonly List<Observer> _observers = new();
    private readonly List<Action> _restore = new();

    private Profiler() { }

    private readonly MagnitudeHistogram _activations = new();

    /// <summary>Every profiled input so far (what is still counted on a device is read first).</summary>
    public MagnitudeHistogram Activations
    {
        get
        {
            Collect();
            return _activations;
        }
    }

    public MagnitudeHistogram Weights { get; } = new();

    /// <summary>The profiled layers in the converter's order (registration order, output head last).</summary>
    public IReadOnlyList<LayerMaxima> Layers
    {
        get
        {
            Collect();
            return _observers.Select(o => new LayerMaxima(o.Name, MagnitudeHistogram.ValueOf(o.InputMax),
                MagnitudeHistogram.ValueOf(o.WeightMax))).ToList();
        }
    }

    /// <summary>
    /// When set, inputs on the CPU are counted as on a device (tensor ops, read at the end): how the tests hold that
    /// path to the CPU count without a GPU. On the CPU the word loop is some 50 times faster.
    /// </summary>
    [ThreadStatic] internal static bool CountCpuInputsAsOnDevice;

    /// <summary>The profiled layers' names, in <see cref="Layers"/>' order.</summary>
    public IReadOnlyList<string> Names => _observers.Select(o => o.Name).ToList();

    /// <summary>
    /// How many leading windows (rows of dimension 0) of each input to count; null: all. A sharded batch filled up
    /// with stand-in windows counts only its own.
    /// </summary>
    public long? CountedWindows { get; set; }

    /// <summary>
    /// Counts the weights now (unless <paramref name="countWeights"/> is false: a sharded model's weights are only
    /// views of gather buffers, and its ranks count their shards instead) and hooks the inputs of every Linear whose
    /// name contains none of <paramref name="skipPatterns"/> (the converter's rule, on the clean model).
    /// </summary>
    public static Profiler Attach(Transformer model, IReadOnlyList<string> skipPatterns, bool countWeights = true)
    {
        var profiler = new Profiler();
        var slots = model.LinearSlots()
            .Select(s => (s.Name, Current: s.Host.GetLinear(s.LocalName),
                Replace: (Action<nn.Module<Tensor, Tensor>>)(m => s.Host.ReplaceLinear(s.LocalName, m))))
            .Append(("output", model.Output, model.ReplaceOutput))
            .ToList();
        try
        {
            using var noGrad = no_grad();
            foreach (var (name, current, replace) in slots)
            {
                if (skipPatterns.Any(p => name.Contains(p, StringComparison.Ordinal))) continue;
                if (current is not Linear linear)
                    throw new InvalidOperationException($"'{name}' is a {current.GetType().Name}, not a plain Linear; profile the clean model");
                var observer = new Observer(name, linear, profiler)
                {
                    WeightMax = countWeights ? profiler.Weights.AddTensor(linear.weight!) : (ushort)0,
                };
                replace(observer);
                profiler._observers.Add(observer);
                profiler._restore.Add(() => replace(linear));
            }
        }
        catch
        {
            profiler.Dispose();
            throw;
        }
        if (profiler._observers.Count == 0)
        {
            profiler.Dispose();
            throw new BfloraInputException(
                $"[bitflip] skip_patterns [{string.Join(", ", skipPatterns)}] leave no Linear layer to profile");
        }
        return profiler;
    }

    private void Collect()
    {
        foreach (var observer in _observers) observer.Collect();
    }

    public void Dispose()
    {
        foreach (var restore in _restore) restore();
        _restore.Clear();
        foreach (var observer in _observers) observer.Dispose();
    }

    /// <summary>
    /// Stands in for one Linear: counts its input, then returns exactly the Linear's output. An input on a GPU is
    /// counted there and read at the end, so the forward never waits for the host.
    /// </summary>
    private sealed class Observer : nn.Module<Tensor, Tensor>
    {
        private DeviceBinCounts? _onDevice;

        // The Linear is reached through a delegate, not a Module-typed field: TorchSharp adopts Module fields as
        // children and would dispose the model's own Linear (and its weight) with the observer.
        private readonly Func<Tensor, Tensor> _inner;
        private readonly Profiler _owner;

        public Observer(string name, Linear inner, Profiler owner) : base($"ProfileObserver({name})")
        {
            Name = name;
            _inner = inner.call;
            _owner = owner;
        }

        public string Name { get; }

        public ushort InputMax { get; private set; }

        public ushort WeightMax { get; init; }

        public override Tensor forward(Tensor input)
        {
            using (no_grad())
            {
                using var counted = _owner.CountedWindows is { } windows ? input.narrow(0, 0, windows) : input.alias();
                if (input.device_type != DeviceType.CPU || CountCpuInputsAsOnDevice)
                    (_onDevice ??= new DeviceBinCounts(input.device)).Add(counted);
                else
                    InputMax = Math.Max(InputMax, _owner._activations.AddTensor(counted));
            }
            return _inner(input);
        }

        /// <summary>Reads what was counted on the device into the histogram and this layer's maximum.</summary>
        public void Collect()
        {
            if (_onDevice is not null) InputMax = Math.Max(InputMax, _onDevice.MoveInto(_owner._activations));
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing) _onDevice?.Dispose();
            base.Dispose(disposing);
        }
    }
}
