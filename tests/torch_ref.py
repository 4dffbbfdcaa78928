#!/usr/bin/python3
"""Independent PyTorch oracle for the ssm C library (byte-level Mamba-1, attention, SwiGLU MLP, hybrids).

Usage:
  /usr/bin/python3 tests/torch_ref.py DUMP.safetensors      check a dump written by the C library
  /usr/bin/python3 tests/torch_ref.py --make-dump OUT.st    write a self-test dump (torch outputs)
        [--dump-dtype f32|f64] [--seed S]                 (f32 default: mimics the C precision)
  /usr/bin/python3 tests/torch_ref.py --self-test           make a dump, check it passes, then check
                                                            that small perturbations FAIL
Exit status 0 when every checked tensor is within tolerance, 1 otherwise (2 on usage errors).

Model: HF transformers MambaForCausalLM semantics (slow/reference path), written from scratch in
plain torch ops; the oracle computes in float64 from the dumped (float32) parameters. A dump whose
metadata has a layer_pattern other than "m" is a stack of those layers (repeated over n_layer):
m = Mamba-1, a = HF LlamaAttention (rotate_half RoPE, grouped-query heads by repeat_kv, an optional
sliding window: query i sees keys i - window < j <= i, eager softmax, no biases; rope_theta 0: no rotation,
as HF NemotronHAttention), f = HF LlamaMLP (SwiGLU, no biases; mlp_act "relu2": HF NemotronHMLP,
down_proj(relu(up_proj(x))^2), no gate_proj), M = Mamba-2 (mamba_ssm Mamba2: the SSD as its plain recurrence, no chunks, and the
gated RMSNorm per group), each as x = x + mixer(rmsnorm(x)).
"""
import argparse
import math
import os
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_py as st  # noqa: E402

# ----------------------------------------------------------------------------------------------
# Tolerances.  relative error = max|c - torch| / max|torch| per tensor (torch = float64 oracle).
# Measured float32 (torch, same formulas) vs this float64 oracle: logits/loss <= 3e-7, grads <= 1e-6.
# ----------------------------------------------------------------------------------------------
TOL_LOGITS = 1e-4
TOL_LOSS = 1e-4
TOL_GRAD = 1e-4
# adam.losses: each is an ordinary forward loss, on parameters that differ from the oracle's only by
# float32 noise passed through adam_steps Adam updates; measured float32 vs float64 <= 2e-7
# relative (also with 20-30 steps), so the forward tolerance applies unchanged.
TOL_ADAM_LOSS = 1e-4
# final.<param>: Adam divides each gradient element by its own running RMS, so a float32 error is
# NOT bounded by the gradient tolerance: an element whose gradient is near zero can step up to ~lr
# in a noise-chosen direction.  So the error is measured against the size of the change the oracle
# made, rel = max|c - t| / max|t - p0| (p0 = the dumped initial parameters; lr- and scale-invariant),
# and held to TOL_FINAL_UPDATE, plus two allowances:
#  * float32 storage of the parameters: half an ulp of max|t| per step, x2 (matters when lr is tiny:
#    lr 1e-4 x 10 steps on dt_proj.bias ~ -7 gives 2e-3 of the update from round-off alone);
#  * per element, if the C gradient of a tensor carries noise ~GRAD_NOISE * max|g|, an element with
#    r_i = min over steps |g_i| / max|g| has relative gradient error up to GRAD_NOISE / r_i, which
#    Adam passes on to its step: element i may differ by
#        max|t - p0| * (TOL_FINAL_UPDATE + min(TOL_FINAL_NOISY, GRAD_NOISE / r_i)).
#    Near-zero-gradient elements are thus held only to a bound (2.5 update scales).
# Measured: torch float32 vs float64 (4 configs, lr 1e-4..1e-2, 6-30 steps): rel <= 6e-4 on plain
# max (the worst element had a 4e-8 gradient next to a 4e-2 maximum), <= 2e-4 within allowances.
# Stress test: float32 plus uniform noise of 3e-6 * max|g| added to every gradient element at every
# step (3x torch's own max-relative gradient error, on all elements) still passes, worst at 0.46 of
# the allowance; 1e-5 fails.  Real optimizer bugs all FAIL (checked at lr 1e-3 and 1e-2): missing
# bias correction, lr schedule off by one step, weight decay on all / on no tensors, no clipping —
# they move large-gradient elements by 10-50% of the update, far above 5e-3.
TOL_FINAL_UPDATE = 5e-3
GRAD_NOISE = 3e-5
TOL_FINAL_NOISY = 2.5

PARAM_SUFFIXES = ["norm.weight", "mixer.in_proj.weight", "mixer.conv1d.weight",
                  "mixer.conv1d.bias", "mixer.x_proj.weight", "mixer.dt_proj.weight",
                  "mixer.dt_proj.bias", "mixer.A_log", "mixer.D", "mixer.out_proj.weight"]
ATTN_SUFFIXES = ["norm.weight", "mixer.q_proj.weight", "mixer.k_proj.weight", "mixer.v_proj.weight",
                 "mixer.o_proj.weight"]
MLP_SUFFIXES = ["norm.weight", "mixer.gate_proj.weight", "mixer.up_proj.weight", "mixer.down_proj.weight"]
RELU2_MLP_SUFFIXES = ["norm.weight", "mixer.up_proj.weight", "mixer.down_proj.weight"]
MAMBA2_SUFFIXES = ["norm.weight", "mixer.in_proj.weight", "mixer.conv1d.weight", "mixer.conv1d.bias", "mixer.dt_bias",
                   "mixer.A_log", "mixer.D", "mixer.norm.weight", "mixer.out_proj.weight"]
DECAY_SUFFIXES = ("embeddings.weight", "in_proj.weight", "conv1d.weight", "x_proj.weight",
                  "dt_proj.weight", "out_proj.weight", "q_proj.weight", "k_proj.weight", "v_proj.weight",
                  "o_proj.weight", "gate_proj.weight", "up_proj.weight", "down_proj.weight")
# the Mamba-2 shape keys (required when the pattern has an 'M')
MAMBA2_INT_KEYS = ["m2_d_state", "m2_d_conv", "m2_expand", "m2_head_dim", "m2_groups"]
# the attention and MLP shape keys (optional: a Mamba-only dump may lack them)
HYBRID_INT_KEYS = ["n_heads", "n_kv_heads", "head_dim", "sliding_window", "intermediate_size"]

INT_KEYS = ["d_model", "n_layer", "d_state", "d_conv", "expand", "dt_rank", "vocab_size",
            "batch", "seq_len"]
OPT_INT_KEYS = ["warmup", "total_steps", "adam_steps"]
OPT_FLOAT_KEYS = ["lr", "min_lr", "weight_decay", "beta1", "beta2", "eps", "clip"]


def param_shapes(cfg):
    D, E, N, K, R, V = (cfg["d_model"], cfg["expand"] * cfg["d_model"], cfg["d_state"],
                        cfg["d_conv"], cfg["dt_rank"], cfg["vocab_size"])
    per = {"norm.weight": [D], "mixer.in_proj.weight": [2 * E, D],
           "mixer.conv1d.weight": [E, 1, K], "mixer.conv1d.bias": [E],
           "mixer.x_proj.weight": [R + 2 * N, E], "mixer.dt_proj.weight": [E, R],
           "mixer.dt_proj.bias": [E], "mixer.A_log": [E, N], "mixer.D": [E],
           "mixer.out_proj.weight": [D, E]}
    if "n_heads" in cfg:
        H, KV, hd, I = cfg["n_heads"], cfg["n_kv_heads"], cfg["head_dim"], cfg["intermediate_size"]
        per.update({"mixer.q_proj.weight": [H * hd, D], "mixer.k_proj.weight": [KV * hd, D],
                    "mixer.v_proj.weight": [KV * hd, D], "mixer.o_proj.weight": [D, H * hd],
                    "mixer.gate_proj.weight": [I, D], "mixer.up_proj.weight": [I, D],
                    "mixer.down_proj.weight": [D, I]})
    if "m2_d_state" in cfg:
        Di, N2, G, P2, K2 = (cfg["m2_expand"] * D, cfg["m2_d_state"], cfg["m2_groups"], cfg["m2_head_dim"],
                             cfg["m2_d_conv"])
        H2, Cd = Di // P2, Di + 2 * G * N2
        per.update({"mixer.in_proj.weight" + "@M": [2 * Di + 2 * G * N2 + H2, D], "mixer.conv1d.weight@M": [Cd, 1, K2],
                    "mixer.conv1d.bias@M": [Cd], "mixer.dt_bias": [H2], "mixer.A_log@M": [H2], "mixer.D@M": [H2],
                    "mixer.norm.weight": [Di], "mixer.out_proj.weight@M": [D, Di], "norm.weight@M": [D]})
    suffixes = {"m": PARAM_SUFFIXES, "a": ATTN_SUFFIXES, "M": MAMBA2_SUFFIXES,
                "f": RELU2_MLP_SUFFIXES if cfg.get("mlp_act") == "relu2" else MLP_SUFFIXES}
    out = [("backbone.embeddings.weight", [V, D])]
    for i in range(cfg["n_layer"]):
        kind = layer_kind(cfg, i)
        for s in suffixes[kind]:
            out.append((f"backbone.layers.{i}.{s}", per.get(s + "@M", per[s]) if kind == "M" else per[s]))
    out.append(("backbone.norm_f.weight", [D]))
    return out


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------
def rmsnorm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def mixer(h, p, pre, cfg):
    """h: [B, T, D] (already normalised). Returns [B, T, D]."""
    Bsz, T, _ = h.shape
    E, N, K, R = cfg["expand"] * cfg["d_model"], cfg["d_state"], cfg["d_conv"], cfg["dt_rank"]
    xz = h @ p[pre + "mixer.in_proj.weight"].t()                    # [B, T, 2E]
    x, z = xz[..., :E], xz[..., E:]
    # depthwise causal conv, left zero padding K-1 (cross-correlation, like torch conv1d)
    w = p[pre + "mixer.conv1d.weight"][:, 0, :]                     # [E, K]
    xpad = torch.cat([x.new_zeros(Bsz, K - 1, E), x], dim=1)         # [B, T+K-1, E]
    conv = p[pre + "mixer.conv1d.bias"].expand(Bsz, T, E)
    for k in range(K):
        conv = conv + xpad[:, k:k + T, :] * w[:, k]
    xs = F.silu(conv)                                                # [B, T, E]
    xdbl = xs @ p[pre + "mixer.x_proj.weight"].t()                   # [B, T, R+2N]
    dt_low, Bm, Cm = xdbl[..., :R], xdbl[..., R:R + N], xdbl[..., R + N:]
    dt = F.softplus(dt_low @ p[pre + "mixer.dt_proj.weight"].t() + p[pre + "mixer.dt_proj.bias"])
    A = -torch.exp(p[pre + "mixer.A_log"])                           # [E, N]
    Dv = p[pre + "mixer.D"]
    hs = xs.new_zeros(Bsz, E, N)
    ys = []
    for t in range(T):
        dA = torch.exp(dt[:, t, :, None] * A)                        # [B, E, N]
        dBx = (dt[:, t] * xs[:, t])[:, :, None] * Bm[:, t, None, :]  # [B, E, N]
        hs = dA * hs + dBx
        ys.append((hs * Cm[:, t, None, :]).sum(-1) + Dv * xs[:, t])  # [B, E]
    y = torch.stack(ys, dim=1)                                       # [B, T, E]
    y = y * F.silu(z)
    return y @ p[pre + "mixer.out_proj.weight"].t()


def mamba2(h, p, pre, cfg):
    """mamba_ssm Mamba2 / HF Mamba2Mixer by its definition: the SSD as the plain recurrence, one step at a time (no
    chunks), h: [B, T, D] (already normalised). Returns [B, T, D]."""
    Bsz, T, D = h.shape
    Di, N, G, P, K = (cfg["m2_expand"] * D, cfg["m2_d_state"], cfg["m2_groups"], cfg["m2_head_dim"], cfg["m2_d_conv"])
    H, GN = Di // P, G * N
    Cd = Di + 2 * GN
    zxbcdt = h @ p[pre + "mixer.in_proj.weight"].t()                 # [B, T, 2Di + 2GN + H]: z, x, B, C, dt
    z, xBC, dt = zxbcdt[..., :Di], zxbcdt[..., Di:Di + Cd], zxbcdt[..., Di + Cd:]
    w = p[pre + "mixer.conv1d.weight"][:, 0, :]                     # [Cd, K]
    xpad = torch.cat([xBC.new_zeros(Bsz, K - 1, Cd), xBC], dim=1)
    conv = p[pre + "mixer.conv1d.bias"].expand(Bsz, T, Cd)
    for k in range(K):
        conv = conv + xpad[:, k:k + T, :] * w[:, k]
    xBC = F.silu(conv)
    x = xBC[..., :Di].reshape(Bsz, T, H, P)
    Bm = xBC[..., Di:Di + GN].reshape(Bsz, T, G, N).repeat_interleave(H // G, dim=2)        # [B, T, H, N]
    Cm = xBC[..., Di + GN:].reshape(Bsz, T, G, N).repeat_interleave(H // G, dim=2)
    dt = F.softplus(dt + p[pre + "mixer.dt_bias"])                   # [B, T, H] (the dump's limit is (0, inf))
    A = -torch.exp(p[pre + "mixer.A_log"])                           # [H]
    Dv = p[pre + "mixer.D"]
    S = x.new_zeros(Bsz, H, P, N)
    ys = []
    for t in range(T):
        S = torch.exp(dt[:, t] * A)[:, :, None, None] * S + (dt[:, t, :, None] * x[:, t])[..., None] * Bm[:, t, :, None, :]
        ys.append((S * Cm[:, t, :, None, :]).sum(-1) + Dv[:, None] * x[:, t])   # [B, H, P]
    y = torch.stack(ys, dim=1).reshape(Bsz, T, Di)
    v = (y * F.silu(z)).reshape(Bsz, T, G, Di // G)                  # RMSNormGated, norm_before_gate False, per group
    v = (v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + 1e-5)).reshape(Bsz, T, Di) * p[pre + "mixer.norm.weight"]
    return v @ p[pre + "mixer.out_proj.weight"].t()


def layer_kind(cfg, i):
    pat = cfg.get("layer_pattern", "m")
    return pat[i % len(pat)]


def rotary(x, theta):
    """HF apply_rotary_pos_emb on x [B, T, heads, hd], positions 0..T-1 (rotate_half form)."""
    T, hd = x.shape[1], x.shape[3]
    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    freqs = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq[None, :]   # [T, hd/2]
    emb = torch.cat([freqs, freqs], dim=-1)
    cos, sin = emb.cos().to(x.dtype)[None, :, None, :], emb.sin().to(x.dtype)[None, :, None, :]
    x1, x2 = x[..., :hd // 2], x[..., hd // 2:]
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def attention(h, p, pre, cfg):
    """HF LlamaAttention (eager), causal, grouped-query, optional sliding window. h: [B, T, D]."""
    Bsz, T, _ = h.shape
    H, KV, hd, win = cfg["n_heads"], cfg["n_kv_heads"], cfg["head_dim"], cfg["sliding_window"]
    q = (h @ p[pre + "mixer.q_proj.weight"].t()).view(Bsz, T, H, hd)
    k = (h @ p[pre + "mixer.k_proj.weight"].t()).view(Bsz, T, KV, hd)
    v = (h @ p[pre + "mixer.v_proj.weight"].t()).view(Bsz, T, KV, hd)
    if cfg["rope_theta"] != 0:                                            # 0: NemotronHAttention, no rotation
        q, k = rotary(q, cfg["rope_theta"]), rotary(k, cfg["rope_theta"])
    k = k.repeat_interleave(H // KV, dim=2)                               # repeat_kv
    v = v.repeat_interleave(H // KV, dim=2)
    scores = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(hd)
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    visible = (j <= i) & ((j > i - win) if win > 0 else True)
    scores = scores.masked_fill(~visible, float("-inf"))
    o = torch.einsum("bhij,bjhd->bihd", torch.softmax(scores, dim=-1), v).reshape(Bsz, T, H * hd)
    return o @ p[pre + "mixer.o_proj.weight"].t()


def mlp(h, p, pre, cfg):
    """HF LlamaMLP: down_proj(silu(gate_proj(x)) * up_proj(x)); relu2: HF NemotronHMLP, down_proj(relu(up_proj(x))^2)."""
    if cfg.get("mlp_act") == "relu2":
        return torch.relu(h @ p[pre + "mixer.up_proj.weight"].t()).pow(2) @ p[pre + "mixer.down_proj.weight"].t()
    g = h @ p[pre + "mixer.gate_proj.weight"].t()
    u = h @ p[pre + "mixer.up_proj.weight"].t()
    return (F.silu(g) * u) @ p[pre + "mixer.down_proj.weight"].t()


def forward(p, tokens, cfg):
    """p: dict name -> tensor, tokens: long [B, T+1]. Returns (logits [B,T,V], mean loss)."""
    inp, tgt = tokens[:, :-1], tokens[:, 1:]
    emb = p["backbone.embeddings.weight"]
    x = emb[inp]
    eps = cfg["norm_eps"]
    for i in range(cfg["n_layer"]):
        pre = f"backbone.layers.{i}."
        hn = rmsnorm(x, p[pre + "norm.weight"], eps)
        kind = layer_kind(cfg, i)
        x = x + (mixer(hn, p, pre, cfg) if kind == "m" else attention(hn, p, pre, cfg) if kind == "a"
                 else mamba2(hn, p, pre, cfg) if kind == "M" else mlp(hn, p, pre, cfg))
    x = rmsnorm(x, p["backbone.norm_f.weight"], eps)
    logits = x @ emb.t()
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1))
    return logits, loss


def loss_and_grads(p, tokens, cfg):
    for v in p.values():
        v.grad = None
    logits, loss = forward(p, tokens, cfg)
    loss.backward()
    return logits.detach(), loss.detach(), {k: v.grad.detach().clone() for k, v in p.items()}


def lr_at(s, o):
    if s < o["warmup"]:
        return o["lr"] * (s + 1) / o["warmup"]
    prog = (s - o["warmup"]) / max(1, o["total_steps"] - o["warmup"])
    return o["min_lr"] + 0.5 * (o["lr"] - o["min_lr"]) * (1 + math.cos(math.pi * prog))


def train(p, tokens, cfg, o, grad_band=None):
    """Runs o['adam_steps'] AdamW steps in place on leaf tensors p; returns the per-step losses.
    AdamW exactly as torch.optim.AdamW (1.13, non-amsgrad, non-maximize) + clip_grad_norm_.
    grad_band: optional dict, filled with name -> min over steps of |g| / max|g| per element."""
    b1, b2, eps, wd = o["beta1"], o["beta2"], o["eps"], o["weight_decay"]
    m = {k: torch.zeros_like(v) for k, v in p.items()}
    v2 = {k: torch.zeros_like(v) for k, v in p.items()}
    losses = []
    for s in range(o["adam_steps"]):
        _, loss, g = loss_and_grads(p, tokens, cfg)
        losses.append(float(loss))
        if grad_band is not None:
            for k, gk in g.items():
                r = gk.abs() / gk.abs().max().clamp_min(1e-300)
                grad_band[k] = r if k not in grad_band else torch.minimum(grad_band[k], r)
        if o["clip"] > 0:
            norm = torch.sqrt(sum((gi.double() ** 2).sum() for gi in g.values()))
            coef = o["clip"] / (float(norm) + 1e-6)
            if coef < 1.0:
                for k in g:
                    g[k] = g[k] * coef
        lr = lr_at(s, o)
        step = s + 1
        bc1 = 1 - b1 ** step
        bc2 = 1 - b2 ** step
        with torch.no_grad():
            for k, w in p.items():
                if k.endswith(DECAY_SUFFIXES) and wd != 0:
                    w.mul_(1 - lr * wd)
                m[k].mul_(b1).add_(g[k], alpha=1 - b1)
                v2[k].mul_(b2).addcmul_(g[k], g[k], value=1 - b2)
                denom = (v2[k].sqrt() / math.sqrt(bc2)).add_(eps)
                w.addcdiv_(m[k], denom, value=-lr / bc1)
    return losses


# ----------------------------------------------------------------------------------------------
# Dump I/O
# ----------------------------------------------------------------------------------------------
def _int(v):
    f = float(v)
    if f != int(f):
        raise ValueError(f"expected an integer, got {v!r}")
    return int(f)


def parse_cfg(meta):
    cfg = {}
    for k in INT_KEYS:
        if k not in meta:
            raise KeyError(f"__metadata__ lacks '{k}'")
        cfg[k] = _int(meta[k])
    cfg["norm_eps"] = float(meta.get("norm_eps", "1e-5"))
    cfg["layer_pattern"] = meta.get("layer_pattern", "m")
    if any(c not in "mafM" for c in cfg["layer_pattern"]) or not cfg["layer_pattern"]:
        raise ValueError(f"unknown layer_pattern {cfg['layer_pattern']!r}")
    if all(k in meta for k in HYBRID_INT_KEYS):
        cfg.update({k: _int(meta[k]) for k in HYBRID_INT_KEYS})
        cfg["rope_theta"] = float(meta.get("rope_theta", "10000"))
        cfg["mlp_act"] = meta.get("mlp_act", "silu")
        if cfg["mlp_act"] not in ("silu", "relu2"):
            raise ValueError(f"unknown mlp_act {cfg['mlp_act']!r}")
    elif set(cfg["layer_pattern"]) - {"m", "M"}:
        raise KeyError(f"__metadata__ lacks one of {HYBRID_INT_KEYS}")
    if "M" in cfg["layer_pattern"]:
        if not all(k in meta for k in MAMBA2_INT_KEYS):
            raise KeyError(f"__metadata__ lacks one of {MAMBA2_INT_KEYS}")
        cfg.update({k: _int(meta[k]) for k in MAMBA2_INT_KEYS})
    opt = None
    if all(k in meta for k in OPT_INT_KEYS + OPT_FLOAT_KEYS):
        opt = {k: _int(meta[k]) for k in OPT_INT_KEYS}
        opt.update({k: float(meta[k]) for k in OPT_FLOAT_KEYS})
    return cfg, opt


def random_model(cfg, seed):
    """A small, non-degenerate random model (float64 numpy), HF-like init scales."""
    g = np.random.default_rng(seed)
    D, E, N, R = cfg["d_model"], cfg["expand"] * cfg["d_model"], cfg["d_state"], cfg["dt_rank"]
    p = {}
    for name, shape in param_shapes(cfg):
        if name.endswith("embeddings.weight"):
            a = g.normal(0, 0.5, shape)
        elif name.endswith("norm.weight") or name.endswith("norm_f.weight"):
            a = g.uniform(0.5, 1.5, shape)
        elif name.endswith("A_log"):
            a = np.log(g.uniform(1, 16, shape))
        elif name.endswith("mixer.D"):
            a = g.uniform(0.5, 1.5, shape) * g.choice([-1, 1], shape)
        elif name.endswith("dt_proj.bias"):
            dt = np.exp(g.uniform(np.log(1e-3), np.log(1e-1), shape))
            a = dt + np.log(-np.expm1(-dt))  # inverse softplus
        elif name.endswith("conv1d.bias"):
            a = g.uniform(-0.5, 0.5, shape)
        elif name.endswith("conv1d.weight"):
            a = g.uniform(-1, 1, shape) / math.sqrt(cfg["d_conv"])
        elif name.endswith("dt_proj.weight"):
            a = g.uniform(-1, 1, shape) * R ** -0.5
        else:  # in_proj, x_proj, out_proj: kaiming-uniform-like 1/sqrt(fan_in)
            a = g.uniform(-1, 1, shape) / math.sqrt(shape[1])
        p[name] = a
    return p


def make_dump(path, seed=0, dtype="f32", cfg=None, opt=None):
    cfg = cfg or dict(d_model=32, n_layer=2, d_state=8, d_conv=4, expand=2, dt_rank=4,
                      vocab_size=256, batch=2, seq_len=24, norm_eps=1e-5)
    opt = opt or dict(lr=1e-2, min_lr=1e-3, warmup=2, total_steps=6, weight_decay=0.1,
                      beta1=0.9, beta2=0.95, eps=1e-8, clip=1.0, adam_steps=6)
    tdt = torch.float32 if dtype == "f32" else torch.float64
    p_np = random_model(cfg, seed)
    # the dumped parameters are float32 (as the C side stores them); compute from those values
    p_np = {k: v.astype(np.float32) for k, v in p_np.items()}
    g = np.random.default_rng(seed + 1)
    tokens = g.integers(0, cfg["vocab_size"], (cfg["batch"], cfg["seq_len"] + 1)).astype(np.int32)
    tt = torch.from_numpy(tokens.astype(np.int64))
    p = {k: torch.tensor(v, dtype=tdt, requires_grad=True) for k, v in p_np.items()}
    logits, loss, grads = loss_and_grads(p, tt, cfg)
    losses = train(p, tt, cfg, opt)
    out = dict(p_np)
    out["input.tokens"] = tokens
    out["out.logits"] = logits.numpy().astype(np.float32)
    out["out.loss"] = np.array([float(loss)], np.float32)
    for k in p_np:
        out["grad." + k] = grads[k].numpy().astype(np.float32)
    out["adam.losses"] = np.array(losses, np.float32)
    for k in p_np:
        out["final." + k] = p[k].detach().numpy().astype(np.float32)
    meta = {k: repr(v) if isinstance(v, float) else str(v) for k, v in {**cfg, **opt}.items()}
    st.save(path, out, meta)


# ----------------------------------------------------------------------------------------------
# Checker
# ----------------------------------------------------------------------------------------------
class Report:
    def __init__(self):
        self.ok = True
        self.n = 0

    def line(self, name, maxabs, rel, tol, good, note=""):
        self.n += 1
        self.ok &= bool(good)
        print(f"{name:52s} maxabs {maxabs:10.3e}  rel {rel:10.3e}  tol {tol:8.1e}  "
              f"{'ok' if good else 'FAIL'}{note}")

    def fail(self, name, why):
        self.n += 1
        self.ok = False
        print(f"{name:52s} FAIL ({why})")

    def compare(self, name, c, t, tol, denom=None):
        c = np.asarray(c, np.float64)
        t = np.asarray(t, np.float64)
        if c.shape != t.shape:
            return self.fail(name, f"shape {list(c.shape)} != expected {list(t.shape)}")
        if not np.all(np.isfinite(c)):
            return self.fail(name, "non-finite values")
        maxabs = float(np.max(np.abs(c - t))) if c.size else 0.0
        if denom is None:
            denom = float(np.max(np.abs(t))) if t.size else 0.0
        rel = maxabs / max(denom, 1e-30)
        self.line(name, maxabs, rel, tol, rel <= tol)


def _compare_final(self, name, c, t, p0, band, steps):
    """final.<param> check, see TOL_FINAL_* above."""
    c = np.asarray(c, np.float64)
    if c.shape != t.shape:
        return self.fail(name, f"shape {list(c.shape)} != expected {list(t.shape)}")
    if not np.all(np.isfinite(c)):
        return self.fail(name, "non-finite values")
    err = np.abs(c - t)
    upd = max(float(np.max(np.abs(t - p0))), 1e-30)
    # float32 storage of the parameters: up to half an ulp of round-off per step (x2 margin),
    # which is not small against the update when lr is tiny.
    scale = float(np.max(np.abs(t)))
    ulp = 2.0 ** (math.floor(math.log2(scale)) - 23) if scale > 0 else 0.0
    tol = TOL_FINAL_UPDATE + steps * ulp / upd
    rel = err / upd
    allow = tol + np.minimum(TOL_FINAL_NOISY, GRAD_NOISE / np.maximum(band, 1e-300))
    excess = float(np.max(rel / allow))
    good = excess <= 1.0
    note = f"  (worst err/allowed {excess:.2f})" if float(rel.max()) > tol else ""
    self.line(name, float(err.max()), float(rel.max()), tol, good, note)


Report.compare_final = _compare_final


def check(path):
    tensors, meta = st.load(path)
    cfg, opt = parse_cfg(meta)
    rep = Report()
    shapes = param_shapes(cfg)
    p0 = {}
    for name, shape in shapes:
        if name not in tensors:
            rep.fail(name, "missing parameter")
            continue
        a = tensors[name]
        if list(a.shape) != shape:
            rep.fail(name, f"shape {list(a.shape)} != {shape}")
            continue
        p0[name] = a.astype(np.float64)
    tok = tensors.get("input.tokens")
    want_tok = [cfg["batch"], cfg["seq_len"] + 1]
    if tok is None or list(tok.shape) != want_tok:
        rep.fail("input.tokens", f"missing or shape != {want_tok}")
    elif tok.min() < 0 or tok.max() >= cfg["vocab_size"]:
        rep.fail("input.tokens", "token out of range")
    if not rep.ok:
        print("FAIL: dump incomplete")
        return 1
    tt = torch.from_numpy(tok.astype(np.int64))
    p = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in p0.items()}
    logits, loss, grads = loss_and_grads(p, tt, cfg)

    def have(name):
        if name in tensors:
            return True
        rep.fail(name, "missing in dump")
        return False

    if have("out.logits"):
        rep.compare("out.logits", tensors["out.logits"], logits.numpy(), TOL_LOGITS)
    if have("out.loss"):
        rep.compare("out.loss", np.reshape(tensors["out.loss"], -1)[:1], [float(loss)], TOL_LOSS)
    for name, _ in shapes:
        if have("grad." + name):
            rep.compare("grad." + name, tensors["grad." + name], grads[name].numpy(), TOL_GRAD)

    has_adam = "adam.losses" in tensors or any(k.startswith("final.") for k in tensors)
    if has_adam:
        if opt is None:
            rep.fail("adam", "optimizer metadata missing "
                     f"(need {', '.join(OPT_INT_KEYS + OPT_FLOAT_KEYS)})")
        else:
            band = {}
            losses = train(p, tt, cfg, opt, grad_band=band)
            if have("adam.losses"):
                c = np.reshape(tensors["adam.losses"], -1)
                if c.size != opt["adam_steps"]:
                    rep.fail("adam.losses", f"{c.size} values, adam_steps={opt['adam_steps']}")
                else:
                    rep.compare("adam.losses", c, losses, TOL_ADAM_LOSS)
            for name, _ in shapes:
                if have("final." + name):
                    rep.compare_final("final." + name, tensors["final." + name],
                                      p[name].detach().numpy(), p0[name],
                                      band[name].numpy(), opt["adam_steps"])
    print(f"{'OK' if rep.ok else 'FAIL'}: {rep.n} tensors checked ({os.path.basename(path)}; "
          f"d_model {cfg['d_model']}, n_layer {cfg['n_layer']}, batch {cfg['batch']}, "
          f"seq_len {cfg['seq_len']}, layers {cfg['layer_pattern']!r}{', adam_steps %d' % opt['adam_steps'] if has_adam and opt else ''})")
    return 0 if rep.ok else 1


def self_test(seed=0):
    """Dump (float32 torch) must pass; perturbed copies must fail."""
    ok = True
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "dump.safetensors")
        make_dump(path, seed=seed, dtype="f32")
        print("== unperturbed float32 torch dump (expect OK)")
        r = check(path)
        ok &= r == 0
        tensors, meta = st.load(path)
        cases = [
            ("grad.backbone.layers.1.mixer.A_log", 1e-3, "one gradient element +1e-3 relative"),
            ("out.logits", 1e-3, "one logit +1e-3 relative"),
            ("adam.losses", 1e-3, "one adam loss +1e-3 relative"),
            ("final.backbone.layers.0.mixer.x_proj.weight", None,
             "one final parameter (largest-gradient element) +2% of the update scale"),
        ]
        for name, rel, what in cases:
            t2 = {k: v.copy() for k, v in tensors.items()}
            a = t2[name].reshape(-1)
            i = int(np.argmax(np.abs(a))) // 2
            if rel is not None:
                a[i] += rel * float(np.max(np.abs(a)))
            else:
                pname = name[len("final."):]
                i = int(np.argmax(np.abs(tensors["grad." + pname])))
                upd = np.max(np.abs(tensors[name].astype(np.float64) - tensors[pname]))
                a[i] += 0.02 * upd
            p2 = os.path.join(d, "bad.safetensors")
            st.save(p2, t2, meta)
            print(f"== perturbed: {what} in {name} (expect FAIL)")
            r = check(p2)
            ok &= r == 1
    print("SELF-TEST", "PASSED" if ok else "FAILED")
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("dump", nargs="?")
    ap.add_argument("--make-dump", metavar="OUT")
    ap.add_argument("--dump-dtype", choices=["f32", "f64"], default="f32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--self-test", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    if a.self_test:
        return self_test(a.seed)
    if a.make_dump:
        make_dump(a.make_dump, seed=a.seed, dtype=a.dump_dtype)
        print(f"wrote {a.make_dump}")
        return 0
    if not a.dump:
        ap.print_usage()
        return 2
    return check(a.dump)


if __name__ == "__main__":
    sys.exit(main())
