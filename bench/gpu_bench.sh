#!/usr/bin/env bash
# The GPU measurements of docs/performance.md, for one NVIDIA GPU (run on the GPU machine):
#   1. the selective scan alone at one layer of the reference shape (B 8, T 2048, d_inner 1536, N 16),
#      against the device's copy bandwidth (build/gpu/bench_cuda_scan);
#   2. a training step of the issue's reference configuration: byte vocabulary, d_model 768, 24 Mamba-1
#      layers (90.7M parameters), batch 8 x 2048, in float32 and in bf16 mixed precision, with the time
#      per op (--profile: GEMMs vs the rest) and the device memory in use;
#   3. decode of the same model at batch 1 and 64 (a CUDA graph per step), float32 and bf16 GEMMs;
#   3b. the bf16 training step with the same 16,384 bytes per step as 2 x 8192 and 1 x 16384 (the time per byte should
#      stay flat: the scan cuts time into segments where the batch is small), and 1 x 65536, 1 x 262144;
#   4. the byte-level Transformer baseline (--config t768x12, 85.2M parameters) in bf16 at 8 x 2048, 2 x 8192 and
#      1 x 16384, beside the same model in PyTorch (bench/torch_transformer_bench.py: SDPA, autocast, fused AdamW,
#      eager and torch.compile), and its batch-1 decode at 1K and 8K positions of context;
#   5. its attention alone (12 heads of 64, bf16, the flash kernels) at the same shapes, beside PyTorch's SDPA
#      (bench/torch_attn_bench.py), in TFLOP/s.
# Usage: bench/gpu_bench.sh [BIN_DIR]   BIN_DIR holds prebuilt ssm, bench_cuda_scan and bench_cuda_attn (default: build
# them here with make cuda). About a minute on an H100.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-}
if [ -z "$bin" ]; then
    make -s -j"$(nproc)" cuda
    ssm=build/ssm scan=build/gpu/bench_cuda_scan attn=build/gpu/bench_cuda_attn
else
    ssm=$bin/ssm scan=$bin/bench_cuda_scan attn=$bin/bench_cuda_attn
fi
echo "# $(date -u +%F) $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"
echo "## scan, one layer"
"$scan"
for precision in "" --bf16; do
    echo "## training step ${precision:-(float32)}"
    "$ssm" bench --config d768x24 --device cuda --what train --batch 8 --seq-len 2048 --steps 5 --profile $precision
    echo "## decode ${precision:-(float32)}"
    "$ssm" bench --config d768x24 --device cuda --what decode --decode-batch 64 --decode-steps 100 $precision
done
echo "## training step bf16 across the batch x length split (same bytes per step), and longer sequences"
for shape in 8x2048 2x8192 1x16384 1x65536 1x262144; do
    "$ssm" bench --config d768x24 --device cuda --what train --batch "${shape%x*}" --seq-len "${shape#*x}" --steps 5 \
        --bf16 || echo "(ssm: d768x24 at $shape did not run)"
done
echo "## Transformer baseline (t768x12), bf16"
for shape in 8x2048 2x8192 1x16384; do
    "$ssm" bench --config t768x12 --device cuda --what train --batch "${shape%x*}" --seq-len "${shape#*x}" --steps 5 \
        --bf16 || echo "(ssm: t768x12 at $shape did not run)"
done
"$ssm" bench --config t768x12 --device cuda --what decode --decode-steps 50 --contexts 1K,8K --bf16 ||
    echo "(ssm: t768x12 decode did not run)"
python3 bench/torch_transformer_bench.py --device cuda --shapes 8x2048,2x8192,1x16384 --modes eager,compiled ||
    echo "(PyTorch: the Transformer bench did not run)"
echo "## attention alone (t768x12's: 12 heads of 64, bf16), forward with lse and backward"
for shape in 8x2048 2x8192 1x16384; do
    "$attn" "${shape%x*}" "${shape#*x}" 12 12 64 || echo "(bench_cuda_attn at $shape did not run)"
done
python3 bench/torch_attn_bench.py --shapes 8x2048,2x8192,1x16384 || echo "(PyTorch: the attention bench did not run)"
