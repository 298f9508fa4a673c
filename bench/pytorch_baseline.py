#!/usr/bin/env python3
"""The PyTorch baseline of bflora's GPU benchmark: the original recipe, timed on the same shape.

A Llama-3.2-1B-sized random model (bf16, frozen, tied embeddings) whose every Linear except the output head is a
bitflip LoRA layer (see ../shared/SEMANTICS.md §1-4): the layer flips the bits of its input x and of its merged weight
W + scaling·B·A, zeroes what lands at or above the threshold, and passes the gradient straight through (zero where
zeroed). Each block is recomputed in backward (activation checkpointing), AdamW trains the LoRA parameters only, and
N warmup + M measured optimizer steps on random tokens are timed. Prints ONE JSON line on stdout, the rest on stderr.

The original draws its flip masks from Philox in Triton kernels; those are not part of this script. The masks here
follow the same law (every selected bit of every element flips independently with probability p, p rounded down to
a power of 1/2) but are drawn sparsely: the gaps between flipped bits of a Bernoulli(p) sequence are geometric, so a
few thousand geometric draws place every flip of a 16M-element tensor, and only the flipped words are touched. A
seeded generator per (layer, component, step), with the original's seed formula, makes the recomputed forward flip
exactly what the first one did. When exp and frac flips share one probability they are drawn as one 16-bit stream.

MFU here = 6 · parameters except the (tied) embedding · tokens/s ÷ peak, the convention bflora's bench uses too,
even though a LoRA step with recompute does a different amount of work: it is a ratio for comparing, not a count.

Smoke run without a GPU: pytorch_baseline.py --device cpu --seq-len 64 --layers 2 --dim 256 --heads 4 --kv-heads 2
--ffn-dim 512 --vocab 1024 --steps 2 --warmup 1
"""
import argparse
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

BF16 = torch.bfloat16
EXP_BITS = (7, 9)    # bf16 sign + exponent: bits 7..15 (mask 0xFF80); (lowest bit, count)
FRAC_BITS = (0, 7)   # bf16 mantissa: bits 0..6 (mask 0x007F)


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


def halves_probability(p):
    """The per-bit probability the original really uses: p rounded down to a power of 1/2 (0 < p < 1)."""
    if not 0 < p < 1:
        raise ValueError(f"flip probability must be in (0, 1), got {p}")
    return 0.5 ** math.ceil(math.log2(1 / p) - 1e-9)


def xor_random_bits(words, low, count, p, generator):
    """Flips bits low..low+count-1 of every int16 word in place, each independently with probability p."""
    n = words.numel() * count
    mean = n * p
    draws = int(mean + 12 * math.sqrt(mean) + 16)  # covering all n bits fails with probability < 1e-30
    pos = torch.empty(draws, dtype=torch.float64, device=words.device).geometric_(p, generator=generator)
    pos = pos.cumsum_(0).sub_(1).long()  # flipped bit positions, strictly increasing
    valid = pos < n  # draws past the tensor's end add 0 to its last word
    elem = (pos // count).clamp_(max=words.numel() - 1)
    bit = pos % count + low
    old = words.index_select(0, elem).long()
    # XOR of one bit as an addition: +2^b where the bit is 0, -2^b where it is 1. An element hit at several bits
    # gets one addition per bit, each computed from the original word, so index_add_ sums them to the XOR.
    delta = (1 - 2 * ((old >> bit) & 1)) * (2 ** bit) * valid
    delta.masked_fill_(delta == 32768, -32768)  # the sign bit: equal modulo 2^16, and in int16 range
    words.index_add_(0, elem, delta.to(torch.int16))


class FlipSpec:
    """One tensor's flips: exp/frac probabilities (None = off) and the zero-out threshold (None = off)."""

    def __init__(self, p_exp, p_frac, zero_out):
        self.p_exp = None if p_exp is None else halves_probability(p_exp)
        self.p_frac = None if p_frac is None else halves_probability(p_frac)
        self.zero_out = zero_out


def flip(t, spec, seed_exp, seed_frac, generator):
    """The flipped (and zeroed) copy of bf16 tensor t, and the mask of kept elements (None without zero-out)."""
    y = t.clone(memory_format=torch.contiguous_format)
    words = y.view(-1).view(torch.int16)
    if spec.p_exp is not None and spec.p_exp == spec.p_frac:
        generator.manual_seed(seed_exp)
        xor_random_bits(words, 0, 16, spec.p_exp, generator)
    else:
        for p, (low, count), seed in ((spec.p_exp, EXP_BITS, seed_exp), (spec.p_frac, FRAC_BITS, seed_frac)):
            if p is not None:
                generator.manual_seed(seed)
                xor_random_bits(words, low, count, p, generator)
    if spec.zero_out is None:
        return y, None
    keep = y.abs() < spec.zero_out  # false for NaN, so NaN and ±Inf become +0 as well
    return torch.where(keep, y, torch.zeros((), dtype=y.dtype, device=y.device)), keep


class BitFlip(torch.autograd.Function):
    """Forward: the flip. Backward: straight through, zero where the forward zeroed."""

    @staticmethod
    def forward(ctx, t, spec, seed_exp, seed_frac, generator):
        y, keep = flip(t, spec, seed_exp, seed_frac, generator)
        ctx.zeroed = keep is not None
        if ctx.zeroed:
            ctx.save_for_backward(keep)
        return y

    @staticmethod
    def backward(ctx, grad):
        if ctx.zeroed:
            (keep,) = ctx.saved_tensors
            grad = torch.where(keep, grad, torch.zeros((), dtype=grad.dtype, device=grad.device))
        return grad, None, None, None, None


class BitFlipLinearLora(nn.Module):
    """y = flip_x(x) @ flip_w(W + scaling·B·A)ᵀ with the seeds of layer layer_idx at optimizer step self.step."""

    def __init__(self, linear, layer_idx, r, alpha, x_spec, w_spec, base_seed, generator):
        super().__init__()
        out_features, in_features = linear.weight.shape
        self.weight = nn.Parameter(linear.weight.detach(), requires_grad=False)
        kind = dict(dtype=linear.weight.dtype, device=linear.weight.device)
        self.lora_A = nn.Parameter(torch.empty(r, in_features, **kind))
        self.lora_B = nn.Parameter(torch.zeros(out_features, r, **kind))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # U(-1/sqrt(in), 1/sqrt(in))
        self.scaling = alpha / r
        self.layer_idx, self.x_spec, self.w_spec = layer_idx, x_spec, w_spec
        self.base_seed, self.generator, self.step = base_seed, generator, 0

    def forward(self, x):
        base = (self.base_seed + self.step * 1000003 + 4 * self.layer_idx) & 0x7FFFFFFC
        if self.x_spec is not None:
            x = BitFlip.apply(x, self.x_spec, base, base + 1, self.generator)
        w = self.weight + (self.lora_B @ self.lora_A) * self.scaling
        if self.w_spec is not None:
            w = BitFlip.apply(w, self.w_spec, base + 2, base + 3, self.generator)
        return F.linear(x, w)


def rms_norm(x, weight, eps):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).type_as(x) * weight


def rope_table(head_dim, seq_len, theta, factor, device):
    """Llama-3.1 scaled RoPE as complex rotations [seq_len, head_dim/2] (low/high freq factors 1/4, context 8192)."""
    freqs = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim)
    low_wavelen, high_wavelen, old_context = 8192 / 1.0, 8192 / 4.0, 8192
    wavelen = 2 * math.pi / freqs
    smooth = (old_context / wavelen - 1.0) / (4.0 - 1.0)
    scaled = torch.where(wavelen > low_wavelen, freqs / factor, freqs)
    middle = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    scaled = torch.where(middle, (1 - smooth) * freqs / factor + smooth * freqs, scaled)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32, device=device), scaled)
    return torch.polar(torch.ones_like(angles), angles)


def apply_rope(x, table):
    """Rotates interleaved pairs (x[2j], x[2j+1]) of every head of x [b, s, heads, head_dim]."""
    b, s, h, d = x.shape
    pairs = torch.view_as_complex(x.float().reshape(b, s, h, d // 2, 2))
    return torch.view_as_real(pairs * table.view(1, s, 1, d // 2)).reshape(b, s, h, d).type_as(x)


class Attention(nn.Module):
    def __init__(self, dim, heads, kv_heads, kind):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.wq = nn.Linear(dim, heads * self.head_dim, bias=False, **kind)
        self.wk = nn.Linear(dim, kv_heads * self.head_dim, bias=False, **kind)
        self.wv = nn.Linear(dim, kv_heads * self.head_dim, bias=False, **kind)
        self.wo = nn.Linear(heads * self.head_dim, dim, bias=False, **kind)

    def forward(self, x, rope):
        b, s, _ = x.shape
        q = apply_rope(self.wq(x).view(b, s, self.heads, self.head_dim), rope).transpose(1, 2)
        k = apply_rope(self.wk(x).view(b, s, self.kv_heads, self.head_dim), rope).transpose(1, 2)
        v = self.wv(x).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        repeat = self.heads // self.kv_heads  # query head h reads key/value head h // repeat
        k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.wo(out.transpose(1, 2).reshape(b, s, -1))


class FeedForward(nn.Module):
    def __init__(self, dim, hidden, kind):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False, **kind)
        self.w2 = nn.Linear(hidden, dim, bias=False, **kind)
        self.w3 = nn.Linear(dim, hidden, bias=False, **kind)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, a, kind):
        super().__init__()
        self.attention = Attention(a.dim, a.heads, a.kv_heads, kind)
        self.feed_forward = FeedForward(a.dim, a.ffn_dim, kind)
        self.attention_norm = nn.Parameter(torch.ones(a.dim, **kind))
        self.ffn_norm = nn.Parameter(torch.ones(a.dim, **kind))
        self.eps = a.norm_eps

    def forward(self, x, rope):
        h = x + self.attention(rms_norm(x, self.attention_norm, self.eps), rope)
        return h + self.feed_forward(rms_norm(h, self.ffn_norm, self.eps))


class Transformer(nn.Module):
    def __init__(self, a, device):
        super().__init__()
        kind = dict(dtype=BF16, device=device)
        self.tok_embeddings = nn.Embedding(a.vocab, a.dim, **kind)
        nn.init.normal_(self.tok_embeddings.weight, std=0.02)  # keeps the tied head's logits near unit scale
        self.layers = nn.ModuleList(Block(a, kind) for _ in range(a.layers))
        self.norm = nn.Parameter(torch.ones(a.dim, **kind))
        self.output = nn.Linear(a.dim, a.vocab, bias=False, **kind)
        self.output.weight = self.tok_embeddings.weight
        self.eps, self.recompute = a.norm_eps, not a.no_checkpointing
        self.rope = rope_table(a.dim // a.heads, a.seq_len, a.rope_theta, a.rope_factor, device)

    def forward(self, tokens):
        h = self.tok_embeddings(tokens)
        for block in self.layers:
            h = checkpoint(block, h, self.rope, use_reentrant=False) if self.recompute else block(h, self.rope)
        return self.output(rms_norm(h, self.norm, self.eps))


def convert(model, a, generator):
    """Replaces every Linear not named like the output head, in registration order (layer_idx 7L + 0..6)."""
    x_spec = None if a.no_flips else FlipSpec(a.p, a.p, a.x_zero_out)
    w_spec = None if a.no_flips else FlipSpec(a.p, a.p, a.w_zero_out)
    layers = []
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.Linear) or "output" in name:
            continue
        parent_name, _, child = name.rpartition(".")
        layer = BitFlipLinearLora(module, len(layers), a.lora_r, a.lora_alpha, x_spec, w_spec, a.base_seed, generator)
        setattr(model.get_submodule(parent_name), child, layer)
        layers.append(layer)
    return layers


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_tflops(device, n, repeats=3, iters=10):
    """The best bf16 n×n×n matmul rate of a few timed loops, in TFLOP/s."""
    a, b = (torch.randn(n, n, device=device, dtype=BF16) for _ in range(2))
    c = torch.empty(n, n, device=device, dtype=BF16)
    torch.matmul(a, b, out=c)
    best = 0.0
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(iters):
            torch.matmul(a, b, out=c)
        synchronize(device)
        best = max(best, 2 * n ** 3 * iters / (time.perf_counter() - start) / 1e12)
    return best


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = ap.add_argument
    add("--steps", type=int, default=20, help="measured optimizer steps")
    add("--warmup", type=int, default=5, help="optimizer steps before timing")
    add("--seq-len", type=int, default=2048)
    add("--batch", type=int, default=1)
    add("--layers", type=int, default=16)
    add("--dim", type=int, default=2048)
    add("--heads", type=int, default=32)
    add("--kv-heads", type=int, default=8)
    add("--ffn-dim", type=int, default=8192)
    add("--vocab", type=int, default=128256)
    add("--norm-eps", type=float, default=1e-5)
    add("--rope-theta", type=float, default=500000.0)
    add("--rope-factor", type=float, default=32.0)
    add("--lora-r", type=int, default=8)
    add("--lora-alpha", type=float, default=16.0)
    add("--lr", type=float, default=1e-4)
    add("--weight-decay", type=float, default=0.0, help="bflora's bench trains without weight decay")
    add("--p", type=float, default=0.5 ** 16, help="probability of every flip (x/w, exp/frac)")
    add("--x-zero-out", type=float, default=8192.0)
    add("--w-zero-out", type=float, default=256.0)
    add("--base-seed", type=int, default=0)
    add("--seed", type=int, default=0, help="model init and data")
    add("--no-flips", action="store_true", help="LoRA layers without flips or zero-out")
    add("--no-checkpointing", action="store_true", help="keep activations instead of recomputing each block")
    add("--device", default="cuda")
    add("--peak-tflops", type=float, help="bf16 peak for MFU [measured with a matmul loop]")
    add("--peak-size", type=int, help="matmul size of that loop [8192 on a GPU, 1024 on a CPU]")
    a = ap.parse_args(argv)
    if a.dim % a.heads or a.heads % a.kv_heads or (a.dim // a.heads) % 2:
        ap.error("dim must split into heads of even size, heads into kv-heads")
    if a.steps < 1 or a.warmup < 0 or a.seq_len < 2 or a.batch < 1:
        ap.error("need steps >= 1, warmup >= 0, seq-len >= 2, batch >= 1")
    return a


def main(argv):
    a = parse_args(argv)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        log("error: --device cuda but torch.cuda.is_available() is false")
        return 2
    torch.manual_seed(a.seed)
    peak = a.peak_tflops
    if peak is None:
        peak = matmul_peak_tflops(device, a.peak_size or (8192 if device.type == "cuda" else 1024))
    log(f"pytorch_baseline: torch {torch.__version__} on {device}, bf16 matmul peak {peak:.1f} TFLOP/s"
        f"{'' if a.peak_tflops else ' (measured)'}")

    model = Transformer(a, device)
    for p in model.parameters():
        p.requires_grad_(False)
    # N of 6·N·tokens as bflora counts it: the frozen model without its (tied) embedding, adapters not included.
    non_embedding = sum(p.numel() for p in model.parameters()) - model.tok_embeddings.weight.numel()
    generator = torch.Generator(device=device)
    flip_layers = convert(model, a, generator)
    lora = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(lora, lr=a.lr, weight_decay=a.weight_decay)
    log(f"pytorch_baseline: {len(flip_layers)} bitflip LoRA layers, {non_embedding:,} parameters without the "
        f"embedding, {sum(p.numel() for p in lora):,} trainable; flips {'off' if a.no_flips else 'on'}, "
        f"seq {a.seq_len} x batch {a.batch}, {a.warmup} + {a.steps} steps")

    data = torch.randint(0, a.vocab, (a.warmup + a.steps, a.batch, a.seq_len + 1), device=device)

    def train_step(tokens):
        optimizer.zero_grad(set_to_none=True)
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lora, 1.0)
        optimizer.step()
        for layer in flip_layers:
            layer.step += 1
        return loss.detach()

    losses = [train_step(data[i]) for i in range(a.warmup)]
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # Each step is timed to its last kernel, and the best one counts, as bflora's bench counts its own.
    times = []
    for i in range(a.steps):
        start = time.perf_counter()
        losses.append(train_step(data[a.warmup + i]))
        synchronize(device)
        times.append(time.perf_counter() - start)
    step_s = min(times)
    tokens_per_s = a.batch * a.seq_len / step_s
    result = {
        "impl": "pytorch",
        "tokens_per_s": round(tokens_per_s, 1),
        "step_s": round(step_s, 5),
        "step_s_mean": round(sum(times) / len(times), 5),
        "mfu": round(6 * non_embedding * tokens_per_s / (peak * 1e12), 4),
        "peak_tflops": round(peak, 1),
        "params_non_embedding": non_embedding,
        "loss_first": round(losses[0].float().item(), 4),
        "loss_last": round(losses[-1].float().item(), 4),
        "flips": not a.no_flips,
        "seq_len": a.seq_len,
        "batch": a.batch,
        "torch": torch.__version__,
    }
    if device.type == "cuda":
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2)
        result["gpu"] = torch.cuda.get_device_name(device)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
