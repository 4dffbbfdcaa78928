"""Model shapes: the command-line options of one, its parameter count and its FLOPs per byte, counted from the
layer shapes; and the layer patterns of a given attention fraction.

A shape is a dict of `ssm train` shape options with Python names: d_model, n_layer, layers (the pattern), and
optionally d_state, d_conv, expand, dt_rank, n_heads, n_kv_heads, head_dim, sliding_window, d_ff, m2_d_state,
m2_head_dim, m2_groups, m2_expand, chunk_size. `resolve` fills in the defaults exactly as ssm_config_resolve
(src/model.c) does, so `params` equals what `ssm info` prints (the experiments check it on every model they train).
"""
import math
from fractions import Fraction

DEFAULTS = {"d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": 0, "n_heads": 0, "n_kv_heads": 0, "head_dim": 0,
            "sliding_window": 0, "d_ff": 0, "m2_d_state": 128, "m2_head_dim": 64, "m2_groups": 1, "m2_expand": 2,
            "chunk_size": 256, "vocab": 256}
OPTION = {"d_model": "--d-model", "n_layer": "--n-layer", "layers": "--layers", "d_state": "--d-state",
          "d_conv": "--d-conv", "expand": "--expand", "dt_rank": "--dt-rank", "n_heads": "--n-heads",
          "n_kv_heads": "--n-kv-heads", "head_dim": "--head-dim", "sliding_window": "--sliding-window",
          "d_ff": "--d-ff", "m2_d_state": "--m2-d-state", "m2_head_dim": "--m2-head-dim", "m2_groups": "--m2-groups",
          "m2_expand": "--m2-expand", "chunk_size": "--chunk-size", "max_context": "--max-context"}


def cli_args(shape):
    """The `ssm train` options that make this shape (defaults left out)."""
    out = []
    for key, flag in OPTION.items():
        if key in shape and (key in ("d_model", "n_layer", "layers") or shape[key] != DEFAULTS.get(key)):
            out += [flag, str(shape[key])]
    return out


def resolve(shape):
    """Every dimension, defaults filled in as ssm_config_resolve fills them."""
    s = dict(DEFAULTS)
    s.update(shape)
    d = s["d_model"]
    s.setdefault("layers", "m")
    if not s["dt_rank"]:
        s["dt_rank"] = (d + 15) // 16
    if "a" in s["layers"]:
        if not s["n_heads"]:
            if not s["head_dim"]:
                s["head_dim"] = d if d < 64 else 64
            s["n_heads"] = d // s["head_dim"]
        if not s["head_dim"]:
            s["head_dim"] = d // s["n_heads"]
        if not s["n_kv_heads"]:
            s["n_kv_heads"] = s["n_heads"]
    if "f" in s["layers"] and not s["d_ff"]:
        s["d_ff"] = ((8 * d // 3) + 63) // 64 * 64
    return s


def kinds(shape):
    """The letter of every layer: the pattern repeated over n_layer (the last repeat cut short)."""
    p = shape.get("layers", "m")
    return [p[i % len(p)] for i in range(shape["n_layer"])]


def layer_params(s, kind):
    """Parameters of one layer of this kind (its RMSNorm weight included)."""
    d = s["d_model"]
    if kind == "m":
        E, N, K, R = s["expand"] * d, s["d_state"], s["d_conv"], s["dt_rank"]
        # in_proj, conv1d weight + bias, x_proj, dt_proj weight + bias, A_log, D, out_proj
        return d + 2 * E * d + E * K + E + (R + 2 * N) * E + E * R + E + E * N + E + d * E
    if kind == "M":
        Di, N, P, G, K = s["m2_expand"] * d, s["m2_d_state"], s["m2_head_dim"], s["m2_groups"], s["d_conv"]
        H = Di // P
        Din, Cd = 2 * Di + 2 * G * N + H, Di + 2 * G * N
        # in_proj, conv1d weight + bias, dt_bias, A_log, D, the gated norm, out_proj
        return d + Din * d + Cd * K + Cd + 3 * H + Di + d * Di
    if kind == "a":
        H, KV, hd = s["n_heads"], s["n_kv_heads"], s["head_dim"]
        return d + 2 * H * hd * d + 2 * KV * hd * d
    if kind == "f":
        return d + 3 * d * s["d_ff"]
    raise ValueError(f"unknown layer kind {kind!r}")


def params(shape):
    """The parameter count `ssm info` prints: tied embedding, the layers, the final norm."""
    s = resolve(shape)
    return s["vocab"] * s["d_model"] + sum(layer_params(s, k) for k in kinds(s)) + s["d_model"]


def mean_context(seq_len, window=0):
    """Keys a query attends to, averaged over the positions of a causal window of seq_len (within a sliding
    window if one is set)."""
    if window and window < seq_len:
        w = window
        return (w * (w + 1) / 2 + (seq_len - w) * w) / seq_len
    return (seq_len + 1) / 2


def layer_flops(s, kind, seq_len):
    """Forward FLOPs per position of one layer (a multiply-add is 2): the GEMMs, the scan, the convolution and
    attention's two products. Norms, activations and rotary positions (elementwise) are not counted."""
    d = s["d_model"]
    if kind == "m":
        E, N, K, R = s["expand"] * d, s["d_state"], s["d_conv"], s["dt_rank"]
        gemm = 2 * (d * 2 * E + E * (R + 2 * N) + R * E + E * d)
        # the scan per state element: exp(dt A), dt B x, h = dA h + dBx, y += C h: 7 FLOPs (the exp as one)
        return gemm + 2 * E * K + 7 * E * N
    if kind == "M":
        Di, N, P, G, K, Q = (s["m2_expand"] * d, s["m2_d_state"], s["m2_head_dim"], s["m2_groups"], s["d_conv"],
                             min(s["chunk_size"], seq_len))
        H = Di // P
        gemm = 2 * (d * (2 * Di + 2 * G * N + H) + Di * d)
        # SSD by chunks of Q: C B^T per group (Q N), its mask times X per head (Q P), the chunk state B^T X and
        # the state's contribution C S per head (N P each)
        ssd = 2 * G * Q * N + H * (2 * Q * P + 4 * N * P)
        return gemm + 2 * (Di + 2 * G * N) * K + ssd
    if kind == "a":
        H, KV, hd = s["n_heads"], s["n_kv_heads"], s["head_dim"]
        gemm = 2 * (2 * H * hd * d + 2 * KV * hd * d)
        return gemm + 4 * H * hd * mean_context(seq_len, s["sliding_window"])
    if kind == "f":
        return 2 * 3 * d * s["d_ff"]
    raise ValueError(f"unknown layer kind {kind!r}")


def flops_per_byte(shape, seq_len, train=True):
    """FLOPs per byte (position) at training windows of seq_len: forward, or forward + backward (3x the
    forward: the backward computes two products for each of the forward's) when train."""
    s = resolve(shape)
    fwd = sum(layer_flops(s, k, seq_len) for k in kinds(s)) + 2 * s["d_model"] * s["vocab"]  # + the LM head
    return 3 * fwd if train else fwd


def fraction_unit(frac):
    """The repeating unit of a layer pattern with this attention fraction: q sequence mixers, p of them
    attention, each attention layer followed by its MLP (a Transformer block, "af"), the rest Mamba-1 ("m"),
    the attention blocks spread evenly and last: 1/4 -> "mmmaf", 1/2 -> "maf", 2/5 -> "mafmaf"..."""
    f = Fraction(frac).limit_denominator(1000)
    if f == 0:
        return "m"
    if f == 1:
        return "af"
    p, q = f.numerator, f.denominator
    out, given = "", 0
    for i in range(1, q + 1):  # attention at the mixer where the running share first reaches i * p / q
        if (i * p) // q > given:
            out += "af"
            given += 1
        else:
            out += "m"
    return out


def match_repeats(unit, base, target):
    """The number of whole repeats of `unit` whose model (base shape: d_model and options) has the parameter
    count nearest `target`; returns (repeats, shape)."""
    best = None
    for r in range(1, 4097):
        shape = dict(base, layers=unit, n_layer=r * len(unit))
        n = params(shape)
        if best is None or abs(n - target) < abs(best[1] - target):
            best = (r, n, shape)
        if n > target:
            break
    return best[0], best[2]


def match_fractions(fractions, base, nominal, spread=0.15):
    """One model per attention fraction, all near one parameter count: for each fraction its unit
    (fraction_unit) repeated a whole number of times. Whole repeats cannot hit any count exactly (at 1/8 a
    repeat is 8 mixers), so the common target is the count within `spread` of `nominal` at which the largest
    relative deviation over the fractions is smallest. Returns (target, [(fraction, repeats, shape)])."""
    units = [(f, fraction_unit(f)) for f in fractions]
    best = None
    steps = 400
    for i in range(steps + 1):
        t = nominal * (1 - spread) * ((1 + spread) / (1 - spread)) ** (i / steps)
        picks = [(f, *match_repeats(u, base, t)) for f, u in units]
        worst = max(abs(math.log(params(sh) / t)) for _, _, sh in picks)
        if best is None or worst < best[0] - 1e-12:
            best = (worst, t, picks)
    return best[1], best[2]


def mixer_fraction(shape):
    """Attention layers / all sequence-mixing layers (m, M, a) of a shape."""
    ks = kinds(shape)
    mixers = sum(1 for k in ks if k in "mMa")
    return sum(1 for k in ks if k == "a") / mixers if mixers else 0.0


def describe(shape):
    """"24 x m", "13 x af", "5 x mmmaf": the layer stack in a few characters."""
    p, n = shape.get("layers", "m"), shape["n_layer"]
    return f"{n // len(p)} x {p}" if n % len(p) == 0 else f"{n} layers of {p}"


def human(n):
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}K" if n >= 1e3 else str(n)


def ceil_to(x, m):
    return int(math.ceil(x / m) * m)
