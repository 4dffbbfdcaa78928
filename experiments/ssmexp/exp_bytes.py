"""Claim 1: tokenizer-free byte-level modeling. A byte-level Mamba-1 against a byte-level Transformer ("af":
attention + SwiGLU MLP blocks, Llama style) of the same width and nearly the same parameter count, trained on
the same bytes; and separately at the same training FLOPs, where the model with fewer FLOPs per byte is trained
for proportionally more steps (the same batch and schedule shape, the cosine stretched over them).

Matching: the Mamba model's depth is the preset's; the Transformer gets the number of blocks whose parameter
count is nearest (ssm info's count; the two differ by under 2% in the full preset). Final numbers: bits per byte
on the test split (the last 5%) with the best checkpoint by validation, every model in windows of its training length
(the Mamba model also as one stream, its state carried); and on a held-out slice of the training split (1 MiB a third
of the way in, never trained on: Corpus.with_hole), because a path-sorted corpus's test split is unlike its training
text (linux-docs': the media API's tables, where attention's copying pays most; docs/experiments/hybrid.md).
"""
from . import published, shapes
from .harness import fmt, md_table
from .svgplot import LinePlot, si

NAME = "bytes"
CLAIM_NO = 1
CLAIM = ("byte-level Mamba reaches lower bits per byte than a byte-level Transformer at matched parameters and "
         "training bytes, and at matched training FLOPs")

PRESETS = {
    "smoke": {
        "corpus": "tinyshakespeare",
        "sizes": [{"label": "tiny", "d_model": 32, "n_layer": 4, "lr": 3e-3}],
        "train": {"batch": 8, "seq_len": 64, "steps": 60, "warmup": 10, "eval_every": 20, "eval_bytes": 8192},
    },
    "full": {  # one H200, about 25 minutes (estimated from the H100 step time of d768x24; attention not timed)
        "corpus": "linux-docs",
        "sizes": [{"label": "23M", "d_model": 384, "n_layer": 24, "lr": 1e-3},
                  {"label": "91M", "d_model": 768, "n_layer": 24, "lr": 6e-4}],
        "train": {"batch": 8, "seq_len": 2048, "steps": 4000, "warmup": 200, "eval_every": 500,
                  "eval_bytes": 1 << 20},
    },
}


def run(ctx):
    P = PRESETS[ctx.preset]
    corpus = ctx.corpus_with_hole(ctx.args.corpus or P["corpus"])
    T = P["train"]["seq_len"]
    runs, rows, pairs = [], [], []
    for size in P["sizes"]:
        base = {"d_model": size["d_model"]}
        mamba = dict(base, n_layer=size["n_layer"], layers="m")
        _, transformer = shapes.match_repeats("af", base, shapes.params(mamba))
        opts = dict(P["train"], lr=size["lr"], min_lr=size["lr"] / 10)
        rm = ctx.train(f"{size['label']}-mamba", corpus, mamba, opts)
        rt = ctx.train(f"{size['label']}-transformer", corpus, transformer, opts)
        # matched FLOPs: the cheaper model per byte trains on more bytes, up to the other's total
        cheap, dear = (rm, rt) if rm.flops_per_byte <= rt.flops_per_byte else (rt, rm)
        ratio = dear.flops_per_byte / cheap.flops_per_byte
        rf = None
        if ratio > 1.01:
            fopts = dict(opts, steps=round(opts["steps"] * ratio))
            kind = "mamba" if cheap is rm else "transformer"
            rf = ctx.train(f"{size['label']}-{kind}-flops", corpus, cheap.shape, fopts)
        for r, matched in ((rm, "bytes"), (rt, "bytes"), (rf, "FLOPs")):
            if r is None:
                continue
            r.test = ctx.eval_text(r, corpus.test, T)
            r.hole = ctx.eval_run(r, corpus.hole, ["--chunk", str(T), "--window", str(T)], tag="-hole")
            r.matched = matched
            r.size = size["label"]
            runs.append(r)
        pairs.append((size["label"], rm, rt, rf, ratio))
    if ctx.dry_run:
        return

    for r in runs:
        s = r.summary()
        s.update(test_bpb=r.test, test_bpb_carried=r.test_carried, hole_bpb=r.hole, size=r.size, matched=r.matched,
                 model="Mamba-1" if r.shape["layers"] == "m" else "Transformer")
        rows.append(s)
    headers = ["size", "model", "layers (d_model)", "parameters", "train FLOPs/byte", "training bytes",
               "training FLOPs", "ms/step", "best val bpb", "test bpb", "test bpb, one stream", "held-out slice bpb"]
    trs = [[s["size"], s["model"] + (" (more steps: FLOPs matched)" if s["matched"] == "FLOPs" else ""),
            f"{s['layers']} ({s['shape']['d_model']})", f"{s['params']:,}", f"{s['flops_per_byte'] / 1e6:.1f}M",
            si(s["train_bytes"]), f"{s['train_flops']:.3g}", fmt(s["median_step_ms"], 1), fmt(s["best_val_bpb"]),
            fmt(s["test_bpb"]) if not s["error"] else f"failed: {s['error']}", fmt(s["test_bpb_carried"]),
            fmt(s["hole_bpb"])]
           for s in rows]
    summary, verdict_lines = {}, []
    for label, rm, rt, rf, ratio in pairs:
        d_bytes = rm.test - rt.test if rm.test is not None and rt.test is not None else None
        line = (f"- **{label}, matched bytes** ({shapes.human(rm.params)} vs {shapes.human(rt.params)} parameters, "
                f"{si(rm.total_bytes())} bytes each): Mamba {fmt(rm.test)} vs Transformer {fmt(rt.test)} test bpb, "
                f"difference {fmt(d_bytes)} ({'Mamba lower' if d_bytes is not None and d_bytes < 0 else 'Mamba not lower'}).")
        verdict_lines.append(line)
        d_hole = rm.hole - rt.hole if rm.hole is not None and rt.hole is not None else None
        verdict_lines.append(
            f"- **{label}, matched bytes, the held-out slice** (text like the training text): Mamba {fmt(rm.hole)} vs "
            f"Transformer {fmt(rt.hole)} bpb, difference {fmt(d_hole)} "
            f"({'Mamba lower' if d_hole is not None and d_hole < 0 else 'Mamba not lower'}).")
        entry = {"matched_bytes": {"mamba": rm.test, "transformer": rt.test, "mamba_minus_transformer": d_bytes},
                 "matched_bytes_held_out_slice": {"mamba": rm.hole, "transformer": rt.hole,
                                                  "mamba_minus_transformer": d_hole},
                 "flops_ratio": ratio}
        if rf is not None:
            m_test, t_test = (rf.test, rt.test) if rf.shape["layers"] == "m" else (rm.test, rf.test)
            m_hole, t_hole = (rf.hole, rt.hole) if rf.shape["layers"] == "m" else (rm.hole, rf.hole)
            d_flops = m_test - t_test if m_test is not None and t_test is not None else None
            verdict_lines.append(
                f"- **{label}, matched FLOPs** (the {'Mamba' if rf.shape['layers'] == 'm' else 'Transformer'} model "
                f"costs {ratio:.2f}x fewer FLOPs per byte and trains {ratio:.2f}x the bytes, "
                f"{rf.total_bytes() * rf.flops_per_byte:.3g} FLOPs each): Mamba {fmt(m_test)} vs Transformer "
                f"{fmt(t_test)} test bpb, difference {fmt(d_flops)}; the held-out slice {fmt(m_hole)} vs {fmt(t_hole)}.")
            entry["matched_flops"] = {"mamba": m_test, "transformer": t_test, "mamba_minus_transformer": d_flops}
            entry["matched_flops_held_out_slice"] = {
                "mamba": m_hole, "transformer": t_hole,
                "mamba_minus_transformer": m_hole - t_hole if m_hole is not None and t_hole is not None else None}
        summary[label] = entry

    note = ctx.plot_note()
    p1 = LinePlot(f"Validation bits per byte vs training bytes ({corpus.name})", "training bytes",
                  "validation bits per byte", logx=True, xfmt=si, note=note)
    p2 = LinePlot(f"Validation bits per byte vs training FLOPs ({corpus.name})", "training FLOPs",
                  "validation bits per byte", logx=True, xfmt=si, note=note)
    for r in runs:
        label = f"{r.size} {'Mamba-1' if r.shape['layers'] == 'm' else 'Transformer'}" + (
            " (FLOPs-matched)" if r.matched == "FLOPs" else "")
        curve = r.curve()
        if r.matched == "bytes":
            p1.add(label, [x for x, _ in curve], [y for _, y in curve], dashed=r.shape["layers"] != "m")
        p2.add(label, [x * r.flops_per_byte for x, _ in curve], [y for _, y in curve],
               dashed=r.shape["layers"] != "m")
    plots = [p1.save(ctx.out / "loss_vs_bytes.svg"), p2.save(ctx.out / "loss_vs_flops.svg")]

    pub = md_table(["source", "setting", "SSM", "bpb", "Transformer", "bpb"],
                   [[s, st, a, fmt(av), b, bv if isinstance(bv, str) else fmt(bv)]
                    for s, st, a, av, b, bv, _ in published.BYTES])
    lrs = ", ".join(f"{s['label']} {s['lr']:g}" for s in P["sizes"])
    table = (f"Corpus {corpus.describe()}. Training: batch {P['train']['batch']} x {T} bytes, {P['train']['steps']} "
             f"steps (the FLOPs-matched run more), learning rate by size ({lrs}; the same for both architectures) "
             f"with a cosine schedule to lr/10 after {P['train']['warmup']} warmup steps, AdamW (weight decay 0.1), "
             f"clip 1. FLOPs per "
             f"byte: forward + backward (3x forward) at windows of {T}, counted from the layer shapes "
             f"(experiments/ssmexp/shapes.py). Test bits per byte: the best checkpoint on the test split, every "
             f"model reading it in windows of {T} bytes from an empty state, as it was trained; the last column: "
             f"Mamba reading it as one stream, its state carried through all {corpus.test_bytes:,} bytes. Held-out "
             f"slice: {corpus.hole_bytes:,} bytes of the training split (from byte {corpus.hole_at:,}) that no model "
             f"trained on, read in windows of {T}: the test split is the end of a path-sorted corpus, unlike the "
             f"training text (docs/experiments/hybrid.md), the slice is like it.\n\n"
             + md_table(headers, trs) + "\n" + "\n".join(verdict_lines) + "\n\n"
             "Published (other corpora, sizes and budgets: compare the direction and size of the gap):\n\n" + pub)
    setup = {"preset": P, "corpus": corpus.describe(), "val_fraction": corpus.val_fraction}
    ctx.write(setup, rows, table, plots, published=published.BYTES, summary=summary)
