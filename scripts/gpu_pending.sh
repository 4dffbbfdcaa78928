#!/usr/bin/env bash
# The GPU checks that wait for a device (a session is lent ~30 device minutes, a call at most 600 s).
#   scripts/gpu_pending.sh build [REF ...]   here (nvcc, no GPU): builds each REF's GPU binaries (default: main
#       ssd-vec2-walk32 gn-cache, those that exist) into .devbuild/REF, adds mamba_ssm's source (from the fetched
#       mirror of state-spaces/mamba, for bench/torch_mamba2_bench.py) and packs them into .devpack/pending.tar.xz (ignored
#       by git; the device tool's carry takes .devpack and data, with data/tinyshakespeare.txt in it)
#   scripts/gpu_pending.sh run rest          on the device (~3 minutes): unpacks and runs the checks below, each
#       under its own timeout, everything also in $OUT/rest.log
# What it checks:
#   ssd-vec2-walk32  (emulated and CPU-tested, never timed) the fused dX kernel's float2 rows and the passes over
#                chunks reading 32 chunks at once: test_ops ssd and test_cuda_model on the GPU, then the m2x24 bf16
#                step at 8 x 2048 and 1 x 16384 against main's binary, alternating, and with SSM_SSD_PASS_KERNEL=1 (the
#                walk-32 pass kernels in place of the tf32 pass products, which took 152 us a call, 3 a layer, on an
#                H100: docs/performance.md); the reference (bench/torch_mamba2_bench.py) in the same call
#   gn-cache     (emulated, never timed) the gated RMSNorm holding a row's values in registers: test_ops gated and
#                test_cuda_model, then the m2x24 step's gated_rmsnorm_fwd / _bwd times (--profile) against main's
# (Run and gone: the warp-per-row gated RMSNorm (reverted), Mamba-2's recomputed gate, the NCCL path on one GPU, the
# tf32 SSD, the segment sweep, the flash block shapes: docs/performance.md and docs/distributed.md, 2026-12-05.)
set -u
cd "$(dirname "$0")/.."
mode=${1:-}
if [ "$mode" = build ]; then
    shift
    refs=("$@")
    [ ${#refs[@]} -gt 0 ] || refs=(main ssd-vec2-walk32 gn-cache)
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
M=.devbuild/main V=.devbuild/ssd-vec2-walk32 C=.devbuild/gn-cache S=$(date +%s)
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
if [ -x $V/ssm ]; then
    t ssd-vec2-walk32 tests
    timeout 100 $V/test_ops ssd 2>&1 | grep -E "^FAIL|cases" | tail -6
    timeout 200 $V/test_cuda_model 2>&1 | grep -E "^(FAIL|ok)" | cut -c1-80 | tail -8
    t m2x24 8 x 2048
    for r in "$M -" "$V -" "$V SSM_SSD_PASS_KERNEL=1" "$M -" "$V -" "$V SSM_SSD_PASS_KERNEL=1"; do
        step $r --batch 8 --seq-len 2048 --profile
    done
    t m2x24 1 x 16384
    for r in "$M -" "$V -" "$V SSM_SSD_PASS_KERNEL=1"; do step $r --batch 1 --seq-len 16384; done
fi
if [ -x $C/ssm ]; then
    t gn-cache
    timeout 100 $C/test_ops gated 2>&1 | grep -E "^FAIL|cases" | tail -4
    timeout 200 $C/test_cuda_model 2>&1 | grep -E "^(FAIL|ok)" | cut -c1-80 | tail -8
    for r in "$M -" "$C -" "$M -" "$C -"; do step $r --batch 8 --seq-len 2048 --profile; done
fi
if [ -d .devbuild/mamba_src ]; then
    t reference
    timeout 300 python3 bench/torch_mamba2_bench.py --mamba-src .devbuild/mamba_src --shapes 8x2048,1x16384 \
        --steps 5 --warmup 3 2>&1 | grep -vi warn | tail -4
fi
t end
