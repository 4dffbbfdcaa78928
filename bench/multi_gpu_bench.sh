#!/usr/bin/env bash
# Data-parallel scaling on one machine's GPUs (issue 16's goal: 2 H200s at >= 1.9x the bytes/s of one): a d_model
# 768 x 24 Mamba-1, batch 8 x 2048 bytes per GPU, bf16, trained on 1 GPU and on N (`ssm train --gpus N`), and the
# gradient all-reduce's time per step (SSM_NCCL_TIMING) against nccl-tests' all_reduce_perf at the same size, where
# that is found (on PATH, or NCCL_TESTS=dir of its build). Prints a table.
#   bench/multi_gpu_bench.sh [N [STEPS]]     N: the GPUs to compare with one (default: all), STEPS: 30
#   SSM=build/ssm  DATA=data/enwik8 (else data/tinyshakespeare.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
SSM=${SSM:-build/ssm}
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
N=${1:-$gpus}
STEPS=${2:-30}
[ "$gpus" -ge 1 ] || { echo "no GPU (nvidia-smi -L lists none)"; exit 1; }
[ "$N" -le "$gpus" ] || { echo "$N GPUs asked, this machine has $gpus"; exit 1; }
DATA=${DATA:-$( [ -e data/enwik8 ] && echo data/enwik8 || echo data/tinyshakespeare.txt)}
out=$(mktemp -d /tmp/ssm_mgpu.XXXXXX)
trap 'rm -rf "$out"' EXIT
opts=(--data "$DATA" --d-model 768 --n-layer 24 --layers m --seq-len 2048 --batch 8 --bf16 --device cuda
      --steps "$STEPS" --warmup 5 --eval-every 1000000 --eval-bytes 65536 --val-fraction 0.01 --sample 0 --quiet)

# median step time (ms) over the steps after the first 5 (start-up, allocation, cuBLASLt's autotuning)
median_ms() {
    python3 - "$1/metrics.jsonl" <<'PY'
import json, statistics, sys
ms = [r["step_ms"] for r in map(json.loads, open(sys.argv[1])) if "step_ms" in r and r["step"] > 5]
print(f"{statistics.median(ms):.2f}")
PY
}

declare -A step_ms allreduce_line
for n in 1 "$N"; do
    [ -n "${step_ms[$n]:-}" ] && continue
    SSM_NCCL_TIMING=1 "$SSM" train "${opts[@]}" --gpus "$n" --out "$out/g$n" 2>"$out/g$n.err" ||
        { cat "$out/g$n.err"; exit 1; }
    step_ms[$n]=$(median_ms "$out/g$n")
    allreduce_line[$n]=$(grep '^nccl all-reduce' "$out/g$n.err" || true)
done

bytes_step=$((8 * 2048))
printf '\n%-6s %10s %14s %9s %10s\n' GPUs "step ms" "bytes/s" scaling efficiency
base=$(python3 -c "print($bytes_step / ${step_ms[1]} * 1e3)")
for n in 1 "$N"; do
    bps=$(python3 -c "print($bytes_step * $n / ${step_ms[$n]} * 1e3)")
    python3 -c "b=$bps; s=b/$base; print(f'%-6d %10.2f %14.0f %8.2fx %9.1f%%' % ($n, ${step_ms[$n]}, b, s, 100*s/$n))"
    [ "$n" = "$N" ] && break
done

if [ "$N" -gt 1 ]; then
    line=${allreduce_line[$N]}
    echo
    echo "ours ($N GPUs, the gradient all-reduce per step): ${line:-not reported}"
    mb=$(sed -n 's/.* of \([0-9.]*\) MB.*/\1/p' <<<"$line")
    perf=$(command -v all_reduce_perf || ls "${NCCL_TESTS:-/nonexistent}"/build/all_reduce_perf 2>/dev/null || true)
    if [ -n "$perf" ] && [ -n "$mb" ]; then
        bytes=$(python3 -c "print(int($mb * 1e6))")
        echo "nccl-tests: $perf -b $bytes -e $bytes -g $N -d float -o sum (out-of-place time us, algbw, busbw):"
        "$perf" -b "$bytes" -e "$bytes" -g "$N" -d float -o sum -w 5 -n 20 | awk '$1 ~ /^[0-9]+$/ {print "  " $6 " us, algbw " $7 " GB/s, busbw " $8 " GB/s"}'
    else
        echo "nccl-tests' all_reduce_perf not found (PATH or NCCL_TESTS=dir): no comparison"
    fi
    echo "step time of $N GPUs minus 1 GPU's: $(python3 -c "print(f'{${step_ms[$N]} - ${step_ms[1]}:.2f}')") ms (the cost of data parallelism per step)"
fi
