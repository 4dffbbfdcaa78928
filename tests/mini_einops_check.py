#!/usr/bin/python3
"""bench/mini_einops.py (the Mamba-2 reference bench's stand-in for einops) against the same rearrangements written in
torch, for every pattern kind mamba_ssm's Mamba-2 path uses; and bench/torch_mamba2_bench.py still compiles. Prints
"ok - ..." or "FAIL - ..." (tests/run_tests.sh counts them)."""
import os
import py_compile
import sys

import torch

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "bench"))
import mini_einops as me  # noqa: E402

g = torch.Generator().manual_seed(0)


def r(*shape):
    return torch.randn(*shape, generator=g)


x, y, h, z, w, d = r(2, 6, 4), r(3, 4, 5), r(3), r(2, 3, 8, 5), r(2, 4, 2, 7), r(5, 1, 4)
cases = [
    ("b l (h p) -> b l h p", me.rearrange(x, "b l (h p) -> b l h p", p=2), x.reshape(2, 6, 2, 2)),
    ("b s d -> b d s", me.rearrange(x, "b s d -> b d s"), x.permute(0, 2, 1)),
    ("b s d -> (b s) d", me.rearrange(x, "b s d -> (b s) d"), x.reshape(12, 4)),
    ("b (h p) l -> b l h p", me.rearrange(x, "b (h p) l -> b l h p", p=3), x.reshape(2, 2, 3, 4).permute(0, 3, 1, 2)),
    ("... p n -> ... (p n)", me.rearrange(y, "... p n -> ... (p n)"), y.reshape(3, 20)),
    ("... (p n) -> ... p n", me.rearrange(y.reshape(3, 20), "... (p n) -> ... p n", n=5), y),
    ("h -> h 1 1", me.rearrange(h, "h -> h 1 1"), h.reshape(3, 1, 1)),
    ("h 1 -> h", me.rearrange(h[:, None], "h 1 -> h"), h),
    ("d 1 w -> d w", me.rearrange(d, "d 1 w -> d w"), d[:, 0]),
    ("b h c l -> b c l h 1", me.rearrange(z, "b h c l -> b c l h 1"), z.permute(0, 2, 3, 1)[..., None]),
    ("b (c l) h -> b h c l", me.rearrange(y, "b (c l) h -> b h c l", l=2), y.reshape(3, 2, 2, 5).permute(0, 3, 1, 2)),
    ("h -> (h p) n", me.repeat(h, "h -> (h p) n", p=2, n=4), h[:, None, None].expand(3, 2, 4).reshape(6, 4)),
    ("h -> h p", me.repeat(h, "h -> h p", p=2), h[:, None].expand(3, 2)),
    ("b l g d -> b l (g h) d", me.repeat(w, "b l g d -> b l (g h) d", h=3),
     w[:, :, :, None].expand(2, 4, 2, 3, 7).reshape(2, 4, 6, 7)),
]
bad = [name for name, got, want in cases if not torch.equal(got, want)]
print(f"{'FAIL' if bad else 'ok'} - mini_einops: {len(cases)} rearrange and repeat patterns equal torch's" +
      (f" (wrong: {', '.join(bad)})" if bad else ""))
try:
    py_compile.compile(os.path.join(here, "..", "bench", "torch_mamba2_bench.py"), doraise=True)
    print("ok - bench/torch_mamba2_bench.py compiles")
except py_compile.PyCompileError as e:
    print(f"FAIL - bench/torch_mamba2_bench.py: {e}")
