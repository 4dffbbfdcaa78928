#!/usr/bin/env bash
# The GPU checks that wait for a device (a session is lent ~30 device minutes, a call at most 600 s).
#   scripts/gpu_pending.sh build [REF ...]   here (nvcc, no GPU): builds each REF's GPU binaries (default: main
#       m2-lean, those that exist; decode-fused, merged, only when named) into .devbuild/REF and packs them into
#       .devpack/pending.tar.xz (ignored by git; the device tool's carry takes .devpack and data, with
#       data/tinyshakespeare.txt in it)
#   scripts/gpu_pending.sh run PART          on the device: unpacks and runs the checks below, each under its own
#       timeout, everything also in $OUT/PART.log. PART: fused (the decode-fused branch, ~7 minutes), rest (main
#       against m2-lean, ~3 minutes)
# What it checks, per branch (each against another binary in the same call):
#   decode-fused test_cuda_decode_fused (against the op-by-op step, GPU and CPU), test_cuda_model; d768x24 decode
#                at batch 1, 8 and 64, fused and op by op, float32, bf16 and int8 (issue 13: 0.593 ms at batch 1,
#                goal 0.15; 1.155 at 64, goal 0.70); m2x24 at 1 and 8; the L2 prefetch and 2 blocks an SM
#   main         the warp-per-row gated RMSNorm (emulated only) and Mamba-2's recomputed gate (CPU-tested only):
#                test_ops gated_rmsnorm, test_cuda_model, then the m2x24 step with --profile against m2-lean's binary
#                (gated_rmsnorm_fwd 6.445, _bwd 9.081 ms a step, 155.8 ms, 7.71 GiB, H100); the m2x24 kernel times
#                (tf32, FFMA); the NCCL path on one GPU (tests/gpu/test_nccl.sh, test_cuda_weights16)
# (Run and gone: the tf32 SSD, swiglu-vec and decode-gemv parts, the segment sweep, the flash block shapes, the
# NemotronH transformers check, t768x12 decode at 8K: docs/performance.md, 2026-12-05.)
set -u
cd "$(dirname "$0")/.."
mode=${1:-}
if [ "$mode" = build ]; then
    shift
    refs=("$@")
    [ ${#refs[@]} -gt 0 ] || refs=(main m2-lean) # (decode-fused: merged; name it to rerun its part)
    rm -rf .devbuild && mkdir -p .devbuild .devpack
    for ref in "${refs[@]}"; do
        git rev-parse -q --verify "$ref^{commit}" >/dev/null || { echo "skip $ref: no such ref"; continue; }
        work=$(mktemp -d /tmp/ssm_pending.XXXXXX)
        git archive "$ref" | tar xf - -C "$work" && rm -rf "$work/tests/fixtures"
        if make -C "$work" -s -j"$(nproc)" OPT="-O3 -march=x86-64-v3" MPI=0 cuda tests >"$work/make.log" 2>&1; then
            # what the checks run, stripped: the pack must stay under the device tool's 64 MiB
            mkdir -p ".devbuild/$ref" && cp "$work"/build/ssm "$work"/build/test_ops "$work"/build/gpu/test_cuda_model \
                ".devbuild/$ref/"
            cp "$work"/build/gpu/test_cuda_weights16 ".devbuild/$ref/" # its w16_refresh case
            [ ! -x "$work"/build/gpu/test_cuda_decode_fused ] || cp "$work"/build/gpu/test_cuda_decode_fused ".devbuild/$ref/"
            strip ".devbuild/$ref"/*
            [ -d "$work/tests/gpu" ] && cp -r "$work/tests/gpu" ".devbuild/$ref/tests_gpu"
            echo "built $ref ($(git rev-parse --short "$ref"))"
        else
            echo "FAIL $ref: build"; tail -20 "$work/make.log"
        fi
        rm -rf "$work"
    done
    tar cf - .devbuild | xz -T"$(nproc)" -3 >.devpack/pending.tar.xz && rm -rf .devbuild
    ls -la .devpack/pending.tar.xz
    exit 0
fi
[ "$mode" = run ] || { echo "usage: scripts/gpu_pending.sh build [REF ...] | run fused|rest" >&2; exit 2; }
part=${2:-}
case "$part" in fused | rest) ;; *) echo "run: PART is fused or rest" >&2; exit 2 ;; esac
out=${OUT:-/tmp/pending_out}
mkdir -p "$out"
exec > >(tee "$out/$part.log") 2>&1
tar xJf .devpack/pending.tar.xz || exit 9
M=.devbuild/main S=$(date +%s)
t() { echo "[$(($(date +%s) - S)) s] $*"; }
has() { [ -x ".devbuild/$1/ssm" ]; }
bench() { timeout 60 "$1/ssm" bench --device cuda "${@:2}" 2>&1 | grep -E "^(train|decode|prefill)|swiglu|by kind|rror"; }
if has decode-fused && [ "$part" = fused ]; then
    t decode-fused
    F=.devbuild/decode-fused
    timeout 150 $F/test_cuda_decode_fused 2>&1 | grep -E "^FAIL|^ok|  #" | tail -40
    timeout 150 $F/test_cuda_model 2>&1 | grep -E "^FAIL|passed|failed" | tail -4
    for w in "" --bf16 --int8; do for B in 8 64; do for f in 1 0; do
        { [ "$w" = --int8 ] && [ $f = 0 ]; } && continue # (int8 on the GPU is the fused step alone)
        echo "fused=$f decode-batch $B $w: $(SSM_DECODE_FUSED=$f bench $F --config d768x24 --what decode --decode-batch $B --decode-steps 200 $w | tr '\n' ' ')"
    done; done; done
    for w in "" --bf16; do for f in 1 0; do # Mamba-2 (issue 14: batch 1 within 2x of the bytes-read floor)
        echo "m2x24 fused=$f decode-batch 8 $w: $(SSM_DECODE_FUSED=$f bench $F --config m2x24 --what decode --decode-batch 8 --decode-steps 200 $w | tr '\n' ' ')"
    done; done
    for k in SSM_DECODE_PREFETCH=0 SSM_DECODE_BLOCKS_PER_SM=2; do
        echo "$k bf16: $(export "$k"; bench $F --config d768x24 --what decode --decode-batch 2 --decode-steps 200 --bf16 | tr '\n' ' ')"
    done
    DECODE_TEST_QUICK=1 timeout 120 compute-sanitizer --tool memcheck $F/test_cuda_decode_fused 2>&1 | grep -E "ERROR SUMMARY|^FAIL|^ok" | tail -6
fi
[ "$part" = fused ] && { t end; exit 0; }
t gated norm # the warp-per-row kernels and the recomputed gate: correct on the GPU, then the step against m2-lean's
timeout 60 $M/test_ops gated_rmsnorm 2>&1 | grep -E "^FAIL|cases" | tail -4
timeout 150 $M/test_cuda_model 2>&1 | grep -E "^FAIL|passed|failed" | tail -4
if has m2-lean; then
    for b in .devbuild/m2-lean $M .devbuild/m2-lean $M; do
        echo "$b: $(timeout 60 $b/ssm bench --config m2x24 --device cuda --what train --batch 8 --seq-len 2048 --steps 3 \
            --bf16 --profile 2>&1 | grep -E '^train|gated|matmul|memory|rror' | tr -s ' ' | tr '\n' ' ' | cut -c1-400)"
    done
fi
t m2x24 kernels # issue 14: the SSD's kernels one by one (ktime.h), tf32 (the default) and FFMA
for f in 1 0; do
    echo "SSM_SSD_TF32=$f"
    SSM_SSD_TF32=$f SSM_KERNEL_TIMES=1 timeout 120 $M/ssm bench --config m2x24 --device cuda --what train --batch 8 \
        --seq-len 2048 --steps 3 --bf16 2>&1 | grep -E "^(train|ssd)"
done
if [ -x $M/tests_gpu/test_nccl.sh ]; then
    t nccl # issue 16 on one GPU: --gpus 1 bitwise the plain run, the w16 shadow after a ZeRO-1 gather
    # libnccl from the toolkit, or else from torch's wheel (nvidia-nccl)
    if ldd $M/ssm | grep -q "libnccl.*not found"; then
        nccl_lib=$(python3 -c "import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], 'lib'))" 2>/dev/null)
        export LD_LIBRARY_PATH=${nccl_lib}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    fi
    timeout 60 $M/test_cuda_weights16 2>&1 | grep -E "^FAIL|^ok" | tail -4
    cp $M/tests_gpu/test_nccl.sh tests/gpu/
    SSM=$M/ssm timeout 150 tests/gpu/test_nccl.sh 2>&1 | tail -12
fi
t end
