#!/usr/bin/python3
"""PyTorch's side of the attention-alone benchmark (build/gpu/bench_cuda_attn is ssm's): causal
scaled_dot_product_attention on bf16 q, k, v [B, H, T, hd] as the Transformer baseline calls it (the backend PyTorch
picks: FlashAttention-2 on Hopper), forward and forward + backward, milliseconds and TFLOP/s counted as
bench_cuda_attn counts them (forward 4 hd per visible (query, key) pair and head, backward 2.5 times that).

    /usr/bin/python3 bench/torch_attn_bench.py [--shapes 8x2048,2x8192,1x16384] [--heads 12] [--hd 64]
"""
import argparse

import torch
import torch.nn.functional as F


def time_ms(fn, reps=9):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for i in range(reps + 2):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        if i >= 2:
            times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="8x2048,2x8192,1x16384")
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--hd", type=int, default=64)
    args = ap.parse_args()
    dev = torch.device("cuda")
    print(f"# {torch.cuda.get_device_name(0)}, torch {torch.__version__}: causal SDPA, bf16, "
          f"{args.heads} heads of {args.hd}")
    print(f"{'shape':>9} {'fwd ms':>8} {'TFLOP/s':>8} {'bwd ms':>8} {'TFLOP/s':>8} {'f+b ms':>8} {'TFLOP/s':>8}")
    for shape in args.shapes.split(","):
        B, T = (int(x) for x in shape.split("x"))
        H, hd = args.heads, args.hd
        q, k, v = (torch.randn(B, H, T, hd, device=dev, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        do = torch.randn(B, H, T, hd, device=dev, dtype=torch.bfloat16)
        fwd = time_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)

        def fwd_bwd():
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            torch.autograd.grad(o, (q, k, v), do)

        both = time_ms(fwd_bwd)
        del out
        pairs = T * (T + 1) / 2
        f_flop = 4.0 * hd * pairs * B * H
        b_flop = 2.5 * f_flop
        bwd = both - fwd
        print(f"{shape:>9} {fwd:8.3f} {f_flop / fwd / 1e9:8.1f} {bwd:8.3f} {b_flop / bwd / 1e9:8.1f} {both:8.3f} "
              f"{(f_flop + b_flop) / both / 1e9:8.1f}")


if __name__ == "__main__":
    main()
