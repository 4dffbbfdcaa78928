#!/usr/bin/env bash
# The GPU checks that wait for a device (a session is lent ~30 device minutes, a call at most 600 s).
#   scripts/gpu_pending.sh build [REF ...]   here (nvcc, no GPU): builds each REF's GPU binaries (default: main) into
#       .devbuild/REF, adds mamba_ssm's source (from the fetched mirror of state-spaces/mamba, for
#       bench/torch_mamba2_bench.py) and packs them into .devpack/pending.tar.xz (ignored by git; the device tool's
#       carry takes .devpack and data, with data/tinyshakespeare.txt in it)
#   scripts/gpu_pending.sh run rest          on the device (~3 minutes): unpacks and runs the checks below, each
#       under its own timeout, everything also in $OUT/rest.log
# What it checks, with main's binary: the GPU tests (test_ops ssd and gated, test_cuda_model), the m2x24 bf16 step at
# 8 x 2048 (--profile) and 1 x 16384, and the reference (bench/torch_mamba2_bench.py) in the same call
# (PENDING_NO_REF=1 skips it). Then, for issue 13:
#   SSM_DECODE_TRACE=100   where a fused decode step's time goes, phase by phase (d768x24 and m2x24, bf16, batch 1)
#   t768x12 decode at 1K   ~165 us an attention + MLP block (docs/experiments/state.md) against ~26 us a Mamba-1
#                          layer op by op: does its graph capture fail (main says so once on stderr since 2b961e3)?
#   --prefill 64K          prefill per byte at batch 1 against batch 8 (issue 13's goal: not slower)
# (Run and gone: the warp-per-row gated RMSNorm (reverted), Mamba-2's recomputed gate, the NCCL path on one GPU, the
# tf32 SSD, the segment sweep, the flash block shapes: docs/performance.md and docs/distributed.md, 2026-12-05. The
# three measuring knobs SSM_SSD_PASS_KERNEL, SSM_SSD_V2 and SSM_GN_CACHE, timed and settled on 2026-12-06: the float2
# dX rows kept, the other two dropped, docs/performance.md.)
set -u
cd "$(dirname "$0")/.."
mode=${1:-}
if [ "$mode" = build ]; then
    shift
    refs=("$@")
    [ ${#refs[@]} -gt 0 ] || refs=(main)
    rm -rf .devbuild && mkdir -p .devbuild .devpack
    for ref in "${refs[@]}"; do
        git rev-parse -q --verify "$ref^{commit}" >/dev/null || { echo "skip $ref: no such ref"; continue; }
        work=$(mktemp -d /tmp/ssm_pending.XXXXXX)
        git archive "$ref" | tar xf - -C "$work" && rm -rf "$work/tests/fixtures"
        if make -C "$work" -s -j"$(nproc)" OPT="-O3 -march=x86-64-v3" MPI=0 build/ssm build/test_ops \
            build/gpu/test_cuda_model >"$work/make.log" 2>&1; then
            # what the checks run, stripped: the pack must stay under the device tool's 64 MiB
            mkdir -p ".devbuild/$ref" && cp "$work"/build/ssm "$work"/build/test_ops "$work"/build/gpu/test_cuda_model \
                ".devbuild/$ref/"
            strip ".devbuild/$ref"/*
            echo "built $ref ($(git rev-parse --short "$ref"))"
        else
            echo "FAIL $ref: build"; tail -20 "$work/make.log"
        fi
        rm -rf "$work"
    done
    mirror=/work/.mirror/state-spaces+mamba/repo # (the fetch tool's copy; without it the reference is skipped)
    if [ -d "$mirror" ]; then
        mkdir -p .devbuild/mamba_src && git --git-dir="$mirror" archive HEAD mamba_ssm | tar xf - -C .devbuild/mamba_src
        echo "mamba_ssm from state-spaces/mamba $(git --git-dir="$mirror" rev-parse --short HEAD)"
    fi
    tar cf - .devbuild | xz -T"$(nproc)" -3 >.devpack/pending.tar.xz && rm -rf .devbuild
    ls -la .devpack/pending.tar.xz
    exit 0
fi
[ "$mode" = run ] || { echo "usage: scripts/gpu_pending.sh build [REF ...] | run rest" >&2; exit 2; }
part=${2:-}
[ "$part" = rest ] || { echo "run: PART is rest" >&2; exit 2; }
out=${OUT:-/tmp/pending_out}
mkdir -p "$out"
exec > >(tee "$out/$part.log") 2>&1
tar xJf .devpack/pending.tar.xz || exit 9
M=.devbuild/main S=$(date +%s)
t() { echo "[$(($(date +%s) - S)) s] $*"; }
nvidia-smi --query-gpu=name --format=csv,noheader
# one m2x24 bf16 step: binary, environment (- for none), then bench arguments
step() {
    local bin=$1 v=$2
    shift 2
    [ "$v" = - ] && v=
    echo "$bin $v: $(env $v timeout 90 "$bin/ssm" bench --config m2x24 --device cuda --what train --steps 5 --bf16 \
        "$@" 2>&1 | grep -E '^train|ssd_|gated|memory|rror' | tr -s ' ' | tr '\n' ' ' | cut -c1-300)"
}
t tests
timeout 100 $M/test_ops ssd 2>&1 | grep -E "^FAIL|cases" | tail -6
timeout 100 $M/test_ops gated 2>&1 | grep -E "^FAIL|cases" | tail -6
timeout 200 $M/test_cuda_model 2>&1 | grep -E "^(FAIL|ok)" | cut -c1-80 | tail -8
t m2x24 8 x 2048
step $M - --batch 8 --seq-len 2048 --profile
t m2x24 1 x 16384
step $M - --batch 1 --seq-len 16384
if [ -d .devbuild/mamba_src ] && [ -z "${PENDING_NO_REF:-}" ]; then # (PENDING_NO_REF=1: skip it)
    t reference
    timeout 300 python3 bench/torch_mamba2_bench.py --mamba-src .devbuild/mamba_src --shapes 8x2048,1x16384 \
        --steps 5 --warmup 3 2>&1 | grep -vi warn | tail -4
fi
t decode trace
for cfg in d768x24 m2x24; do
    echo "== $cfg"
    SSM_DECODE_TRACE=100 timeout 60 $M/ssm bench --config $cfg --device cuda --what decode --decode-steps 200 \
        --decode-batch 1 --bf16 2>&1 | tail -11
done
t Transformer decode at 1K
timeout 90 $M/ssm bench --config t768x12 --device cuda --what decode --decode-steps 50 --decode-batch 1 --contexts 1K \
    2>&1 | tail -4
t prefill 64K, batch 1 and 8
timeout 90 $M/ssm bench --config d768x24 --device cuda --what decode --decode-steps 20 --decode-batch 8 --prefill 64K \
    --bf16 2>&1 | tail -6
t end
