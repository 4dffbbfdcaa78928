"""Claim 2: noise (padding) bytes. A filler byte inserted at random positions makes a fraction R of the stream
(`ssm train/eval --noise-rate R`, the byte `--noise-byte`, default 0); loss and bits per byte count the real
bytes only. At R = 0, 0.25, 0.5, 0.75, for a Mamba-1 model and a Transformer of the same parameter count:
bits per *real* byte on the test split (with the same noise rate), training time per real byte, and the
inference state per real byte of context.

The real content per training window is held fixed (the preset's real context), so the window grows as
1 / (1 - R): 1536 real bytes are windows of 1536, 2048, 3072 and 6144 positions. Batch and steps are the same at
every rate, so every model sees the same number of real bytes. Attention's cost per window grows with the
square of the window, a Mamba layer's linearly: per real byte, attention pays ~1/(1-R) in time and state more
than a Mamba model, and must learn to look past the filler.
"""
from . import published, shapes
from .decode_bench import bench_decode, context_label
from .harness import fmt, md_table
from .svgplot import LinePlot

NAME = "noise"
CLAIM_NO = 2
CLAIM = ("uninformative filler bytes cost a Transformer quadratically in time and memory and degrade it, while an "
         "SSM learns to ignore them (bits, time and memory per real byte)")
RATES = [0.0, 0.25, 0.5, 0.75]
NEEDS = [("train", "--noise-rate"), ("eval", "--noise-rate")]

PRESETS = {
    "smoke": {"corpus": "tinyshakespeare", "d_model": 32, "n_layer": 4, "real_context": 48, "decode_steps": 3,
              "train": {"batch": 4, "steps": 20, "warmup": 4, "eval_every": 10, "eval_bytes": 4096, "lr": 3e-3,
                        "min_lr": 3e-4}},
    # one H200: eight ~23M models, 2000 steps of 8 windows of 1536 real bytes (24.6M real bytes each)
    "full": {"corpus": "linux-docs", "d_model": 384, "n_layer": 24, "real_context": 1536, "decode_steps": 20,
             "train": {"batch": 8, "steps": 2000, "warmup": 100, "eval_every": 250, "eval_bytes": 1 << 20,
                       "lr": 1e-3, "min_lr": 1e-4}},
    # the same at d_model 768 (90.7M vs 92.2M parameters): about 4x the full preset's time
    "full-90m": {"corpus": "linux-docs", "d_model": 768, "n_layer": 24, "real_context": 1536, "decode_steps": 20,
                 "train": {"batch": 8, "steps": 2000, "warmup": 100, "eval_every": 250, "eval_bytes": 1 << 20,
                           "lr": 6e-4, "min_lr": 6e-5}},
}


def models(P):
    base = {"d_model": P["d_model"]}
    mamba = dict(base, n_layer=P["n_layer"], layers="m")
    return [("Mamba-1", mamba), ("Transformer", shapes.match_repeats("af", base, shapes.params(mamba))[1])]


def window(P, rate):
    return round(P["real_context"] / (1 - rate))


def write_skip(ctx, reason):
    """What the table can say without the option: the plan and the published side."""
    P = PRESETS[ctx.preset]
    plan = md_table(["noise rate", "window (positions)"] + [m for m, _ in models(P)],
                    [[r, window(P, r)] + [shapes.describe(s) for _, s in models(P)] for r in RATES])
    ctx.write({"preset": P, "needs": [f"ssm {c} {o}" for c, o in NEEDS]}, [],
              "Planned runs (not run):\n\n" + plan + "\nPublished:\n\n" +
              md_table(["source", "what it reports"], [list(p) for p in published.NOISE]), [],
              published=published.NOISE, status="skipped", reason=reason)


def run(ctx):
    ctx.require_options(NEEDS)
    P = PRESETS[ctx.preset]
    corpus = ctx.corpus(ctx.args.corpus or P["corpus"])
    rows = []
    for label, shape in models(P):
        slug = label.lower().replace("-", "")
        for rate in RATES:
            T = window(P, rate)
            opts = dict(P["train"], seq_len=T)
            r = ctx.train(f"{slug}-noise{int(rate * 100)}", corpus, shape, opts, extra=["--noise-rate", str(rate)])
            test = ctx.eval_text(r, corpus.test, T, ["--noise-rate", str(rate)])
            row = {**r.summary(), "model": label, "noise_rate": rate, "window": T, "test_bits_per_real_byte": test,
                   "test_bits_per_real_byte_one_stream": r.test_carried}
            real_per_step = P["train"]["batch"] * T * (1 - rate)
            ms = r.median_step_ms()
            row["train_us_per_real_byte"] = ms * 1e3 / real_per_step if ms else None
            if not r.error and not ctx.dry_run:
                info = ctx.info(r.best, context=T)
                state = info["state"].get("total", {}).get(context_label(T))
                row["state_bytes"] = state
                row["state_bytes_per_real_byte"] = state / (T * (1 - rate)) if state is not None else None
                b = bench_decode(ctx, r.best, T, P["decode_steps"], f"bench-{r.name}", 600)
                row["decode_ms_per_position"] = b.get("ms_per_step")
                row["decode_ms_per_real_byte"] = b["ms_per_step"] / (1 - rate) if "ms_per_step" in b else None
                row["bench_error"] = b.get("error")
            rows.append(row)
    if ctx.dry_run:
        return

    headers = ["model", "noise rate", "window", "parameters", "test bits per real byte", "train µs per real byte",
               "state per real byte", "decode ms per real byte"]
    trs = [[s["model"], s["noise_rate"], s["window"], f"{s['params']:,}",
            fmt(s["test_bits_per_real_byte"]) if not s["error"] else f"failed: {s['error']}",
            fmt(s["train_us_per_real_byte"], 2), fmt(s.get("state_bytes_per_real_byte"), 1),
            fmt(s.get("decode_ms_per_real_byte"), 3)] for s in rows]
    summary = {}
    for label, _ in models(P):
        mine = [s for s in rows if s["model"] == label]
        r0, r3 = mine[0], mine[-1]
        def ratio(key):
            a, b = r0.get(key), r3.get(key)
            return b / a if a and b else None
        summary[label] = {"bpb_at_0": r0["test_bits_per_real_byte"], "bpb_at_max": r3["test_bits_per_real_byte"],
                          "train_time_ratio": ratio("train_us_per_real_byte"),
                          "state_ratio": ratio("state_bytes_per_real_byte"),
                          "decode_time_ratio": ratio("decode_ms_per_real_byte")}
    lines = [f"- **{m}**, noise 0 -> {RATES[-1]}: bits per real byte {fmt(s['bpb_at_0'])} -> {fmt(s['bpb_at_max'])}; "
             f"per real byte, training time x{fmt(s['train_time_ratio'], 2)}, state x{fmt(s['state_ratio'], 2)}, "
             f"decode time x{fmt(s['decode_time_ratio'], 2)}." for m, s in summary.items()]
    note = ctx.plot_note()
    plots = []
    for key, title, ylabel, fname, logy in (
            ("test_bits_per_real_byte", "Test bits per real byte vs noise rate", "bits per real byte",
             "bpb_vs_noise.svg", False),
            ("train_us_per_real_byte", "Training time per real byte vs noise rate", "µs per real byte",
             "time_vs_noise.svg", True),
            ("state_bytes_per_real_byte", "Inference state per real byte of context vs noise rate",
             "bytes of state per real byte", "memory_vs_noise.svg", True)):
        p = LinePlot(title, "noise rate (fraction of the stream that is filler)", ylabel, logy=logy, note=note)
        for label, _ in models(P):
            mine = [s for s in rows if s["model"] == label]
            p.add(label, [s["noise_rate"] for s in mine], [s.get(key) for s in mine])
        plots.append(p.save(ctx.out / fname))
    table = (f"Corpus {corpus.describe()}. {P['real_context']} real bytes per window, batch {P['train']['batch']}, "
             f"{P['train']['steps']} steps at every rate (the same real bytes); the test split with the same "
             f"noise rate, read in windows of the training length from an empty state, as trained (result.json "
             f"also has Mamba's score as one stream, its state carried through). Time: the median training step "
             f"over the real bytes in it. State: ssm info at the training window, over the real bytes in it. Decode: ssm bench at that context, per position / (1 - rate).\n\n"
             + md_table(headers, trs) + "\n" + "\n".join(lines) + "\n\nPublished:\n\n"
             + md_table(["source", "what it reports"], [list(p) for p in published.NOISE]))
    ctx.write({"preset": P, "corpus": corpus.describe(), "rates": RATES}, rows, table, plots,
              published=published.NOISE, summary=summary)
