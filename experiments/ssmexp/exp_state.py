"""Claim 3: state vs cache. A Mamba-1 model's inference state is fixed; an attention layer's key/value cache grows
with the context. For Mamba-1, a Transformer and two hybrids (attention fractions 1/4 and 1/12) of about the same
parameter count, at contexts from 1K to 1M bytes: the state as `ssm info --context N` and `ssm bench` report it
(what the state holds), the process's peak memory (measured: VmHWM on the CPU, nvidia-smi on a GPU) and the
decode time per byte after a prefill of N bytes (`ssm bench --what decode --contexts N`, batch 1, median step).
Past a preset's `prefill_to` the decode starts at position N without its prefill (`--no-prefill`: the cache that long,
zeros), since decode's time and memory do not depend on what the cache holds and an attention prefill of N bytes is
quadratic (the Transformer's 256K ran past 300 s with the warp-per-query kernels, 2026-12-05); the table marks them.

Each (model, context) is its own bench process, so its peak memory is its own. A model whose bench fails or runs
past the time limit at one context is not tried at longer ones (the table says so). The models' weights are
one training step from their initialization: decode time and memory do not depend on the weights' values.
"""
from . import shapes
from .decode_bench import bench_decode, context_label, parse_context
from .harness import fmt, md_table
from .svgplot import PALETTE, LinePlot, pow2

NAME = "state"
CLAIM_NO = 3
CLAIM = ("inference memory and decode time per byte as context grows from 1K to 1M bytes: fixed for Mamba, "
         "growing for attention and hybrids (measured)")

PRESETS = {
    "smoke": {"d_model": 32, "n_layer": 4, "contexts": ["1K", "4K"], "decode_steps": 5, "timeout": 120,
              "prefill_to": 1 << 10},
    # one H200: the bench of each model at each context, at most 5 minutes each (the attention prefill of 1M
    # positions is quadratic: expect the Transformer's longest contexts to hit the limit); 5, not 10, so that one
    # bench fits a device call of 10 minutes with the rest of the call (experiments/device_call.sh)
    "full": {"d_model": 768, "n_layer": 24, "contexts": ["1K", "4K", "16K", "64K", "256K", "1M"],
             "decode_steps": 20, "timeout": 300, "prefill_to": 64 << 10},
    # a CPU (a laptop's, or a machine waiting for its GPU): the 23M models of claim 1's smaller pair, to 256K (the
    # Mamba model's 256K bench took 219 s on one thread; 1M, four times the prefill, would pass the 600 s limit)
    "cpu": {"d_model": 384, "n_layer": 24, "contexts": ["1K", "4K", "16K", "64K", "256K"], "decode_steps": 20,
            "timeout": 600},
}


def models(P):
    base = {"d_model": P["d_model"]}
    mamba = dict(base, n_layer=P["n_layer"], layers="m")
    target = shapes.params(mamba)
    out = [("Mamba-1", mamba)]
    out.append(("Transformer", shapes.match_repeats("af", base, target)[1]))
    for frac in ("1/4", "1/12"):
        out.append((f"hybrid {frac}", shapes.match_repeats(shapes.fraction_unit(frac), base, target)[1]))
    return out


def run(ctx):
    P = PRESETS[ctx.preset]
    contexts = [parse_context(c) for c in P["contexts"]]
    text = ctx.synthetic_text()
    rows, per_model = [], []
    for label, shape in models(P):
        slug = label.lower().replace(" ", "-").replace("/", "_")
        rundir = ctx.out / "runs" / slug
        # a model directory: one training step from the initialization, on the CPU (any kind runs there); not when
        # the results come from earlier calls' cache (--from-cache)
        if not ctx.from_cache:
            ctx.run([ctx.ssm, "train", "--data", ctx.rel(text), "--out", ctx.rel(rundir), *shapes.cli_args(shape),
                     "--steps", "1", "--batch", "1", "--seq-len", "16", "--warmup", "0", "--val-fraction", "0",
                     "--sample", "0", "--quiet", "--overwrite", "--device", "cpu"]
                    + (["--threads", str(ctx.threads)] if ctx.threads else []), f"init-{slug}")
        model = rundir / "checkpoint"
        entry = {"model": label, "shape": shape, "layers": shapes.describe(shape), "points": []}
        stopped = None
        for n in contexts:
            point = {"context": n}
            if stopped:
                point["skipped"] = stopped
                entry["points"].append(point)
                continue
            if not ctx.dry_run:
                info = ctx.info(model, context=n)
                entry["params"] = info["params"] or entry.get("params")  # (None: an info --from-cache lacks)
                point["state_info_bytes"] = info["state"].get("total", {}).get(context_label(n))
            seek = n > P.get("prefill_to", n)
            b = bench_decode(ctx, model, n, P["decode_steps"], f"bench-{slug}-{context_label(n)}", P["timeout"],
                             ["--no-prefill"] if seek else [])
            point.update(b, prefilled=not seek)
            if b.get("error") == "not run yet":  # (--from-cache: no earlier call measured it)
                point["skipped"] = point.pop("error")
            elif "error" in b:
                stopped = f"not run: {b['error']} at {context_label(n)}"
            entry["points"].append(point)
        per_model.append(entry)
    if ctx.dry_run:
        return

    headers = ["model", "layers", "parameters", "context", "state (ssm info)", "peak memory (measured)",
               "decode ms/byte", "decode bytes/s"]
    on_gpu = ctx.device.startswith("cuda")
    mem_label = ("GPU memory: nvidia-smi's samples of the process, or ssm's own peak allocation where larger"
                 if on_gpu else "peak RSS")
    trs = []
    for e in per_model:
        for p in e["points"]:
            row = {"model": e["model"], "layers": e["layers"], "params": e.get("params"), **p}
            rows.append(row)
            err = p.get("skipped") or p.get("error")
            trs.append([e["model"], e["layers"], f"{e.get('params', 0):,}",
                        context_label(p["context"]) + ("" if p.get("prefilled", True) else " (no prefill)"),
                        _bytes(p.get("state_info_bytes")), err or _mem_text(p, on_gpu),
                        fmt(p.get("ms_per_step"), 3), fmt(p.get("bytes_per_s"), 1)])
    note = ctx.plot_note()
    p_mem = LinePlot("Inference memory vs context (solid: the state; dashed: the process, measured)",
                     "context (bytes)", "bytes", logx=True, logy=True, xfmt=pow2, yfmt=_bytes_tick, log_base_x=2,
                     log_base_y=2, note=note, legend="outside")
    p_time = LinePlot("Decode time per byte vs context", "context (bytes)", "ms per byte (batch 1)", logx=True,
                      logy=True, xfmt=pow2, log_base_x=2, note=note)
    for i, e in enumerate(per_model):
        xs, color = [p["context"] for p in e["points"]], PALETTE[i % len(PALETTE)]
        p_mem.add(f"{e['model']}: state", xs, [p.get("state_info_bytes") for p in e["points"]], color=color)
        p_mem.add(f"{e['model']}: {'GPU memory' if on_gpu else 'peak RSS'}", xs, [_mem(p, on_gpu) for p in e["points"]], dashed=True,
                  color=color)
        p_time.add(e["model"], xs, [p.get("ms_per_step") for p in e["points"]], color=color)
    plots = [p_mem.save(ctx.out / "memory_vs_context.svg"), p_time.save(ctx.out / "decode_vs_context.svg")]
    summary = {}
    for e in per_model:
        pts = [p for p in e["points"] if p.get("ms_per_step") is not None]
        if len(pts) >= 2:
            a, b = pts[0], pts[-1]
            summary[e["model"]] = {
                "contexts": [a["context"], b["context"]],
                "state_growth": (b.get("state_info_bytes") or 0) / (a.get("state_info_bytes") or 1),
                "decode_time_growth": b["ms_per_step"] / a["ms_per_step"]}
    lines = [f"- **{m}**: from {context_label(s['contexts'][0])} to {context_label(s['contexts'][1])} the state "
             f"grows {s['state_growth']:.3g}x and the decode time per byte {s['decode_time_growth']:.3g}x."
             for m, s in summary.items()]
    table = (f"Models of about {shapes.human(shapes.params(models(P)[0][1]))} parameters at d_model {P['d_model']} "
             f"(the hybrids: attention fraction 1/4 and 1/12, experiments/ssmexp/shapes.py); batch-1 decode after a "
             f"prefill of each context, median of {P['decode_steps']} steps (\"no prefill\": the decode started at "
             f"that position, the cache that long and zeros, `ssm bench --no-prefill`: the same reads, without the "
             f"prefill's quadratic time). \"state\" is what ssm info reports "
             f"the decode state holds; \"peak memory\" is the bench process's own ({mem_label}: weights, state "
             f"and the prefill's working memory, where there was a prefill). No published numbers are set beside "
             f"these: the claim is about the mechanism, measured here.\n\n" + md_table(headers, trs) + "\n" + "\n".join(lines) + "\n")
    ctx.write({"preset": P}, rows, table, plots, summary=summary)


def _mem(p, on_gpu):
    """A point's measured peak memory in bytes, or None where the measurement missed: less than the state it held
    (nvidia-smi's 0.2 s samples can miss a short decode's cache; points cached before bench printed its own peak)."""
    if not on_gpu:
        return p.get("peak_rss_bytes")
    v = max((x for x in (p.get("gpu_memory_bytes"), p.get("device_peak_bytes")) if x), default=None)
    return v if v and v >= (p.get("state_info_bytes") or 0) else None


def _mem_text(p, on_gpu):
    v = _mem(p, on_gpu)
    if v is None and on_gpu and p.get("gpu_memory_bytes"):
        return f"missed (a sample: {_bytes(p['gpu_memory_bytes'])})"
    return _bytes(v)


def _bytes(v):
    if v is None:
        return "-"
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if v >= div:
            return f"{v / div:.1f} {unit}"
    return f"{v:.0f} B"


def _bytes_tick(v):
    return _bytes(v).replace(".0 ", " ")
