#!/usr/bin/env bash
# The CPU measurements of docs/performance.md, side by side in one run with the same threads:
#   1. training step, d_model 256 x 4 layers, batch 8 x 256: ssm vs the PyTorch float32 reference
#      (bench/torch_train_bench.py, its fastest formulations);
#   2. decode of the d_model 768 x 24-layer byte model at batch 1 and 16, against memory bandwidth,
#      and PyTorch's recurrent decode of the same shape.
# Usage: bench/cpu_bench.sh [THREADS]   (default: all cores). Takes about 3 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-$(nproc)}
make -s build/ssm
echo "# $(date -u +%F) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, $threads threads"
echo "## training: ssm"
build/ssm bench --config d256x4 --what train --batch 8 --seq-len 256 --steps 5 --threads "$threads"
echo "## training: PyTorch $(/usr/bin/python3 -c 'import torch; print(torch.__version__)') float32"
/usr/bin/python3 bench/torch_train_bench.py --threads "$threads" --steps 3 --warmup 1 --formulations loop-fused,hf-loop
echo "## decode: ssm"
build/ssm bench --config d768x24 --what decode --decode-steps 20 --decode-batch 16 --threads "$threads"
echo "## decode: PyTorch"
/usr/bin/python3 bench/torch_train_bench.py --decode --threads "$threads" --d-model 768 --n-layer 24 --decode-batches 1,16
