#!/usr/bin/python3
"""The Mamba-2 reference on a GPU: state-spaces/mamba's Mamba2 layers (its Triton SSD kernels,
mamba_chunk_scan_combined, and its Triton gated and fused add + RMSNorm) in a byte-level language model of ssm's
m2x24 shape, trained with bf16 autocast, fused AdamW and gradient clipping: the step time and peak memory to set
beside `ssm bench --config m2x24 --device cuda --what train --bf16` in the same run (docs/performance.md).

The model is mamba_ssm's MixerModel (Block with fused add + RMSNorm, residual in float32, tied head) written out here,
so that only the Mamba-2 path of the package is imported: its CUDA extensions (selective_scan_cuda, causal_conv1d)
need not be built. Without causal_conv1d, Mamba2 runs its convolution as torch's conv1d and cannot take the fused
"mem_eff" path (mamba_split_conv1d_scan_combined); --mem-eff asks for it where causal_conv1d is installed.

Usage (on the GPU machine; MAMBA_SRC a checkout of state-spaces/mamba, the directory holding mamba_ssm/):
  python3 bench/torch_mamba2_bench.py --mamba-src MAMBA_SRC [--batch 8 --seq-len 2048] [--steps 5 --warmup 3]
Prints one line per shape: "reference m2x24 BxT: ms per step (median), peak GiB". Several shapes:
--shapes 8x2048,1x16384.
"""
import argparse
import importlib.util
import os
import statistics
import sys
import time
import types
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F


def import_mamba2(src):
    """mamba_ssm's Mamba2, Block and RMSNorm without running the package's __init__ (which imports the CUDA
    extensions): the package registered as a bare namespace over src/mamba_ssm"""
    if importlib.util.find_spec("einops") is None:  # the machine's torch may come without it
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import mini_einops

        sys.modules["einops"] = mini_einops
    pkg = types.ModuleType("mamba_ssm")
    pkg.__path__ = [os.path.join(src, "mamba_ssm")]
    sys.modules["mamba_ssm"] = pkg
    from mamba_ssm.modules.block import Block
    from mamba_ssm.modules.mamba2 import Mamba2
    from mamba_ssm.ops.triton.layer_norm import RMSNorm, layer_norm_fn

    return Mamba2, Block, RMSNorm, layer_norm_fn


class ByteLM(nn.Module):
    """MixerModel + tied head (mamba_ssm.models.mixer_seq_simple) with Mamba-2 mixers and no MLP"""

    def __init__(self, a, Mamba2, Block, RMSNorm, layer_norm_fn):
        super().__init__()
        self.layer_norm_fn = layer_norm_fn
        self.embedding = nn.Embedding(256, a.d_model)
        mixer = partial(Mamba2, d_state=a.d_state, headdim=a.headdim, ngroups=a.ngroups, expand=a.expand,
                        chunk_size=a.chunk, use_mem_eff_path=a.mem_eff)
        self.layers = nn.ModuleList(
            Block(a.d_model, partial(mixer, layer_idx=i), mlp_cls=nn.Identity, norm_cls=partial(RMSNorm, eps=1e-5),
                  fused_add_norm=True, residual_in_fp32=True) for i in range(a.n_layer))
        self.norm_f = RMSNorm(a.d_model, eps=1e-5)
        self.lm_head = nn.Linear(a.d_model, 256, bias=False)
        self.lm_head.weight = self.embedding.weight
        nn.init.normal_(self.embedding.weight, std=0.02)  # (mamba_ssm's _init_weights; torch's N(0, 1) gave loss 49)

    def forward(self, ids):
        h, residual = self.embedding(ids), None
        for layer in self.layers:
            h, residual = layer(h, residual)
        h = self.layer_norm_fn(h, self.norm_f.weight, self.norm_f.bias, eps=self.norm_f.eps, residual=residual,
                               prenorm=False, residual_in_fp32=True, is_rms_norm=True)
        return self.lm_head(h)


def bench_shape(model, opt, B, T, a):
    ids = torch.randint(0, 256, (B, T + 1), device="cuda")
    x, y = ids[:, :-1], ids[:, 1:]
    params = [p for p in model.parameters() if p.requires_grad]

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(x)
        loss = F.cross_entropy(logits.float().reshape(-1, 256), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(a.warmup):  # (Triton compiles and autotunes here)
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        loss = step()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(f"reference m2x24 {B}x{T}: {statistics.median(times):.2f} ms per step (median of {a.steps}; "
          f"min {min(times):.2f}), peak {peak:.2f} GiB, loss {loss.item():.4f}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mamba-src", required=True, help="a state-spaces/mamba checkout (the directory of mamba_ssm/)")
    ap.add_argument("--shapes", default="8x2048", help="batch x length, comma-separated (default 8x2048)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--d-model", type=int, default=768)
    ap.add_argument("--n-layer", type=int, default=24)
    ap.add_argument("--d-state", type=int, default=128)
    ap.add_argument("--headdim", type=int, default=64)
    ap.add_argument("--ngroups", type=int, default=1)
    ap.add_argument("--expand", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--mem-eff", action="store_true", help="the fused path (needs causal_conv1d built)")
    a = ap.parse_args()
    torch.manual_seed(0)
    model = ByteLM(a, *import_mamba2(a.mamba_src)).cuda()
    n = sum(p.numel() for p in model.parameters())
    print(f"reference model: {n / 1e6:.2f}M parameters, torch {torch.__version__}, {torch.cuda.get_device_name()}",
          flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1, fused=True)
    for shape in a.shapes.split(","):
        B, T = (int(v) for v in shape.split("x"))
        bench_shape(model, opt, B, T, a)


if __name__ == "__main__":
    main()
