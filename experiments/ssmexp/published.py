"""Published numbers the tables set beside ours, as compiled in ../shared/notes/byte-level-results.md (each with
its paper and table). They come from other corpora, sizes and budgets: compare the direction and the size of a
gap, not the values themselves."""

BYTES = [
    # (source, setting, SSM, value, Transformer, value, unit)
    ("H-Net (arXiv 2507.07955) Table 2", "FineWeb-Edu, FLOPs matched to GPT-3 Large, 8192-byte context",
     "MambaByte (190M, Mamba-2)", 0.845, "LlamaByte (SWA 1024)", 0.859, "bpb"),
    ("H-Net Table 2", "same; the global-attention LlamaByte at 2x the FLOPs", "MambaByte", 0.845,
     "LlamaByte (global, 2x FLOPs)", 0.845, "bpb"),
    ("MambaByte (arXiv 2401.13660) Table 2", "PG19; MambaByte 30B bytes, the Transformer 80B",
     "MambaByte-353M", 0.930, "Transformer-320M", 1.057, "bpb"),
    ("MambaByte Table 2", "Code; same budgets", "MambaByte-353M", 0.396, "Transformer-320M", 0.575, "bpb"),
    ("MambaByte Table 2", "ArXiv; same budgets", "MambaByte-353M", 0.663, "Transformer-320M", 0.816, "bpb"),
    ("SpaceByte (arXiv 2404.14408) Table 1", "PG-19 / arXiv / Github, 1e19 training FLOPs, grid-searched",
     "-", None, "byte Transformer", "1.138 / 0.909 / 0.655", "bpb"),
    ("Transformer-XL (Dai et al. 2019) Table 2", "enwik8 test (our linux-docs stands in for it)",
     "-", None, "TXL 12L 41M / Al-Rfou T12 44M", "1.06 / 1.11", "bpb"),
]

HYBRID = [
    ("Mamba-2 (arXiv 2405.21060) §9.2.3", "about 10% of the layers attention performs best; at 2.7B, 58 SSD + 6 "
     "attention layers (fraction 0.094) had the best Pile perplexity"),
    ("H-Net §3.3 (second-hand)", "a main network of 20 Mamba-2 + 7 Transformer layers (about 3:1, fraction 0.26) "
     "scales as well as a pure Transformer"),
    ("Gu, 'On the tradeoffs of SSMs and Transformers' (blog, 2025)", "optimum between 3:1 and 10:1 Mamba:attention "
     "(fraction 1/11 to 1/4), seen second-hand; the figure's values are unknown"),
]

NOISE = [
    ("Gu, 'On the tradeoffs of SSMs and Transformers' (blog, 2025)",
     "the noise-token figure's values are unknown (only the page's opening was available): no published number "
     "to set beside ours"),
]

# Zoology MQAR (HazyResearch/zoology, Fig. 2 config): attention (2 layers) solves every cell of the grid
MQAR = {"attention": "solves every (T, pairs) cell at every d_model (Zoology Fig. 2)",
        "mamba": "no Mamba number in the notes; Zoology's point is that gated convolutions need d_model to grow "
                 "with T and pairs, and a fixed state must run out as pairs grow"}

SELCOPY = [  # Mamba (arXiv 2312.00752) Table 1: accuracy %, length 4096, vocabulary 16, 2 layers, D 64
    ("Mamba block, S6 (Mamba)", 99.8), ("H3 block, S6", 99.7), ("no gate, S6", 97.0), ("Mamba block, S4", 56.4),
    ("H3 block, S4", 57.0), ("Mamba block, Hyena", 28.4), ("no gate, S4", 18.3),
]

# Mamba Table 11 / App. E.1: induction heads trained at 256, accuracy % by test length
INDUCTION = {
    "Mamba (74K params)": {64: 100, 128: 100, 256: 100, 512: 100, 1024: 100, 2048: 100, 4096: 100, 8192: 100,
                           16384: 100, 32768: 100, 65536: 100},
    "MHA-Abs (137K)": {256: 100, 512: 58.6, 1024: 26.6},
    "MHA-xPos": {512: 99.6, 1024: 67.6},
    "H3 (153K)": {512: 80.9},
}
