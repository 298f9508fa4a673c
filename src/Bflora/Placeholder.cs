namespace Bflora;
public static class Probe { public static float Sum() { using var t = TorchSharp.torch.ones(2, 2); return t.sum().item<float>(); } }
