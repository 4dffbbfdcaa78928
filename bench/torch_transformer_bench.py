#!/usr/bin/python3
"""The PyTorch side of issue 18's Transformer benchmark: a byte-level pre-norm Transformer (Llama's shape: RMSNorm,
rotary positions, causal attention through scaled_dot_product_attention, a SwiGLU MLP, tied embedding) trained with
bf16 autocast, AdamW (fused) and gradient clipping, eager and torch.compile'd, at the shapes of bench/gpu_bench.sh.
It is ssm's `--config t768x12` (d_model 768, 12 blocks, 12 heads of 64, MLP 2048, vocabulary 256: 85.2M parameters)
written independently in PyTorch; the step is forward + backward + clip + AdamW, the median of --steps after
--warmup, with the device's peak memory.

    /usr/bin/python3 bench/torch_transformer_bench.py [--device cuda] [--shapes 8x2048,2x8192,1x16384] [--modes eager,compiled]
    /usr/bin/python3 bench/torch_transformer_bench.py --device cpu --smoke       (seconds: a tiny model, to check the script)
"""
import argparse
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight.to(x.dtype)


def rope_tables(T, hd, theta, device):
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, device=device, dtype=torch.float32) / hd))
    ang = torch.arange(T, device=device, dtype=torch.float32)[:, None] * inv[None, :]
    emb = torch.cat([ang, ang], dim=-1)  # HF Llama's rotate_half layout
    return emb.cos(), emb.sin()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


class Attention(nn.Module):
    def __init__(self, d, heads, kv_heads, hd):
        super().__init__()
        self.heads, self.kv_heads, self.hd = heads, kv_heads, hd
        self.q_proj = nn.Linear(d, heads * hd, bias=False)
        self.k_proj = nn.Linear(d, kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(d, kv_heads * hd, bias=False)
        self.o_proj = nn.Linear(heads * hd, d, bias=False)

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.heads, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.kv_heads, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.kv_heads, self.hd).transpose(1, 2)
        q = q * cos.to(q.dtype) + rotate_half(q) * sin.to(q.dtype)
        k = k * cos.to(k.dtype) + rotate_half(k) * sin.to(k.dtype)
        if self.kv_heads != self.heads:  # (SDPA's enable_gqa is newer than Debian's torch)
            k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)
            v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)
        if hasattr(F, "scaled_dot_product_attention"):
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # Debian's torch (smoke runs on the CPU): the same product, materialized
            s = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd)
            s = s.masked_fill(torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
            o = s.softmax(-1) @ v
        return self.o_proj(o.transpose(1, 2).reshape(B, T, self.heads * self.hd))


class MLP(nn.Module):
    def __init__(self, d, ff):
        super().__init__()
        self.gate_proj = nn.Linear(d, ff, bias=False)
        self.up_proj = nn.Linear(d, ff, bias=False)
        self.down_proj = nn.Linear(ff, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Transformer(nn.Module):
    def __init__(self, vocab, d, blocks, heads, kv_heads, ff, theta=10000.0, eps=1e-5):
        super().__init__()
        hd = d // heads
        self.embed = nn.Embedding(vocab, d)
        self.norms = nn.ModuleList(RMSNorm(d, eps) for _ in range(2 * blocks))
        self.attn = nn.ModuleList(Attention(d, heads, kv_heads, hd) for _ in range(blocks))
        self.mlp = nn.ModuleList(MLP(d, ff) for _ in range(blocks))
        self.norm_f = RMSNorm(d, eps)
        self.hd, self.theta = hd, theta
        nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, ids):
        cos, sin = rope_tables(ids.shape[1], self.hd, self.theta, ids.device)
        x = self.embed(ids)
        for i, (a, m) in enumerate(zip(self.attn, self.mlp)):
            x = x + a(self.norms[2 * i](x), cos, sin)
            x = x + m(self.norms[2 * i + 1](x))
        return F.linear(self.norm_f(x), self.embed.weight)  # tied head


def make_step(model, opt, bf16, device):
    def step(ids, tgt):
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            logits = model(ids)
            loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), tgt.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def bench(args, B, T, mode):
    device = args.device
    torch.manual_seed(0)
    model = Transformer(256, args.d_model, args.blocks, args.heads, args.kv_heads, args.d_ff).to(device)
    fused = {"fused": True} if device == "cuda" else {}  # (Debian's CPU torch has no fused AdamW)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, **fused)
    step = make_step(model, opt, args.bf16, device)
    if mode == "compiled":
        model.forward = torch.compile(model.forward)
    ids = torch.randint(0, 256, (B, T), device=device)
    tgt = torch.randint(0, 256, (B, T), device=device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(args.warmup + args.steps):
        sync(device)
        t0 = time.perf_counter()
        loss = step(ids, tgt)
        sync(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    ms = statistics.median(times) * 1e3
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{mode:9s} {B}x{T:<6d} {ms:9.2f} ms/step {B * T / ms * 1e3:12.0f} bytes/s  peak {peak:6.2f} GiB  "
          f"loss {loss.item():.3f}  ({n_params / 1e6:.1f}M parameters)", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--shapes", default="8x2048,2x8192,1x16384")
    p.add_argument("--modes", default="eager,compiled")
    p.add_argument("--d-model", type=int, default=768)
    p.add_argument("--blocks", type=int, default=12)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--kv-heads", type=int, default=12)
    p.add_argument("--d-ff", type=int, default=2048)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-bf16", dest="bf16", action="store_false")
    p.add_argument("--smoke", action="store_true", help="a tiny model and shape, eager: checks the script")
    args = p.parse_args()
    if args.smoke:
        args.d_model, args.blocks, args.heads, args.kv_heads, args.d_ff = 64, 2, 4, 2, 96
        args.shapes, args.modes, args.steps, args.warmup = "2x64", "eager", 2, 1
    torch.backends.cuda.matmul.allow_tf32 = False
    print(f"# torch {torch.__version__}, {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else "")
          + f", d_model {args.d_model}, {args.blocks} blocks, {args.heads} heads ({args.kv_heads} kv), MLP {args.d_ff}, "
          + ("bf16 autocast" if args.bf16 else "float32"))
    for mode in args.modes.split(","):
        for shape in args.shapes.split(","):
            B, T = (int(v) for v in shape.split("x"))
            bench(args, B, T, mode)


if __name__ == "__main__":
    main()
