#!/usr/bin/env bash
# The GPU checks that wait for a device (a session is lent ~30 device minutes, a call at most 600 s).
#   scripts/gpu_pending.sh build [REF ...]   here (nvcc, no GPU): builds each REF's GPU binaries (default: main) into
#       .devbuild/REF, adds mamba_ssm's source (from the fetched mirror of state-spaces/mamba, for
#       bench/torch_mamba2_bench.py) and packs them into .devpack/pending.tar.xz (ignored by git; the device tool's
#       carry takes .devpack and data, with data/tinyshakespeare.txt in it)
#   scripts/gpu_pending.sh run rest          on the device (~3 minutes): unpacks and runs the checks below, each
#       under its own timeout, everything also in $OUT/rest.log
#   scripts/gpu_pending.sh run heldout       on the device (~1 minute; carry data-mirror too): a d384 x 12 Mamba-1 and a
#       Transformer trained 800 steps on linux-docs' training split less a 1 MB hole, each scored on the hole (text
#       like its training text, never seen) and on the validation split (docs/experiments/hybrid.md, "The gap"). (The
#       "gap" part before it, 2026-12-06: every scoring path, CPU and GPU, float32 and bf16, equals the training
#       forward; test_cuda_model's training-shape cases pass.)
# What "run rest" checks:
#   tests            test_ops (attention, SSD, gated norm, scan, embedding), test_cuda_model and test_cuda_decode_fused,
#                    every FAIL; test_ops attn of every other binary built
#   tiny             the paper preset's induction model (2K positions a step) alone and four at once: whether
#                    device_parallel.sh's groups beat one run at a time (processes share a GPU by time slices)
#   steps            the attention kernels alone (bench_cuda_attn at 8 x 2048 and 1 x 16384) and the training steps of
#                    d768x24 at 8 x 2048 and 1 x 16384, t768x12 at 8 x 2048 and 1 x 16384, bf16, for every binary in
#                    .devbuild: build main r2 (r2: a local branch with bench/flash_shapes.sh's first variant as the
#                    committed shapes, the flash kernels' two row blocks a warp, emulated but never timed) or
#                    cd904ad main (before and after the embedding fix, 6d8464c)
#   fused decode     d768x24 at batch 1 in bf16, float32 and int8, batch 4 in bf16, m2x24 at batch 1 in bf16, after
#                    the L1 prefetch's removal (H200 before it, cd904ad: 0.436-0.440, 0.521-0.527, 0.466-0.473,
#                    0.697-0.698, 0.444-0.448 ms; with SSM_DECODE_PREFETCH=1 0.427-0.429, 0.525-0.527, 0.446-0.459,
#                    0.669-0.670, 0.444-0.451)
#   fused SSD        SSM_SSD_FUSED (ssd_fused.cuh; 2, all but the walks, the default since 2026-12-07; 1 all; 0
#                    none) and SSM_GN_FUSED (the gated norm's row in registers; 2, the backward, the default; 1 both):
#                    test_ops ssd and gated and test_cuda_model at each, then the m2x24 bf16 step at 8 x 2048 and
#                    1 x 16384 at each, --profile's SSD lines, kernel times
#   fused T decode   main's (or a tdec binary's; decode_transformer.cu, the default since 2026-12-07): its
#                    test_cuda_decode_fused, then t768x12 at batch 1 and 4, at 1K and 8K,
#                    op by op against SSM_DECODE_FUSED=1 (float32, bf16, int8), and the fused step's phases (trace)
# (Run and gone: the warp-per-row gated RMSNorm (reverted), Mamba-2's recomputed gate, the NCCL path on one GPU, the
# tf32 SSD, the segment sweep, the flash block shapes: docs/performance.md and docs/distributed.md, 2026-12-05. The
# three measuring knobs SSM_SSD_PASS_KERNEL, SSM_SSD_V2 and SSM_GN_CACHE, the decode trace, the Transformer's decode at
# 1K and prefill at 64K; then the decode's reads before barriers (reverted), the attention decode's runs of keys, the
# float32 dq kernel, Mamba-1 and m2x24 decode, the m2x24 step, the tiled float32 attention, the decode's launch
# bounds and early reads (decode-l1), the L1 prefetch (removed), bench's device peak and a small model's step (task
# against file, threads): docs/performance.md,
# 2026-12-06.)
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
            build/gpu/test_cuda_model build/gpu/test_cuda_decode_fused build/gpu/bench_cuda_attn >"$work/make.log" 2>&1; then
            # what the checks run, stripped: the pack must stay under the device tool's 64 MiB
            mkdir -p ".devbuild/$ref" && cp "$work"/build/ssm "$work"/build/test_ops "$work"/build/gpu/test_cuda_model \
                "$work"/build/gpu/test_cuda_decode_fused "$work"/build/gpu/bench_cuda_attn ".devbuild/$ref/"
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
[ "$mode" = run ] || { echo "usage: scripts/gpu_pending.sh build [REF ...] | run rest|heldout" >&2; exit 2; }
part=${2:-}
case "$part" in rest | heldout) ;; *) echo "run: PART is rest or heldout" >&2; exit 2 ;; esac
out=${OUT:-/tmp/pending_out}
mkdir -p "$out"
exec > >(tee "$out/$part.log") 2>&1
tar xJf .devpack/pending.tar.xz || exit 9
M=.devbuild/main S=$(date +%s)
t() { echo "[$(($(date +%s) - S)) s] $*"; }
nvidia-smi --query-gpu=name --format=csv,noheader
if [ "$part" = heldout ]; then
    t data
    mkdir -p /tmp/ho && xz -dc data-mirror/linux-docs.txt.xz >/tmp/ho/all.txt || exit 9
    # the training split (first 90%) less a 1 MB hole at 10M; the hole is text like the training text, never seen
    { head -c 10000000 /tmp/ho/all.txt; tail -c +11000001 /tmp/ho/all.txt | head -c 17349000; } >/tmp/ho/train.txt
    tail -c +10000001 /tmp/ho/all.txt | head -c 1000000 >/tmp/ho/hole.txt
    tail -c +28349001 /tmp/ho/all.txt | head -c 1000000 >/tmp/ho/val.txt # the validation split's first 1 MB
    for layers in m af; do
        dir=/tmp/ho/$layers
        t "train $dir"
        timeout 200 $M/ssm train --data /tmp/ho/train.txt --val-fraction 0.01 --out $dir --d-model 384 --n-layer 12 \
            --layers $layers --batch 8 --seq-len 2048 --steps 800 --warmup 80 --eval-every 800 --eval-bytes 262144 \
            --lr 0.001 --sample 0 --quiet --device cuda --bf16 --overwrite 2>&1 | tail -1
        python3 - "$dir/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
tr = [x["bpb"] for x in rows if "bpb" in x][-100:]
print("  training bpb (last 100 steps) %.3f" % (sum(tr) / len(tr)))
PY
        for f in hole val; do
            echo "  $f: $(timeout 120 $M/ssm eval --model $dir/checkpoint --data /tmp/ho/$f.txt --device cuda \
                --window 2048 --quiet 2>&1 | tail -1)"
        done
    done
    t end
    exit 0
fi
X=$M
t tests of $X
for part in attn ssd gated scan embedding; do
    echo "test_ops $part: $(timeout 120 $X/test_ops $part 2>&1 | grep -E "^FAIL|cases" | tail -3 | tr '\n' ' ')"
done
for X2 in .devbuild/*/; do # the other binaries' attention (a branch's flash shapes: bench/flash_shapes.sh)
    [ "$X2" = "$M/" ] || [ ! -x "$X2/test_ops" ] ||
        echo "$(basename "$X2") test_ops attn: $(timeout 120 "$X2/test_ops" attn 2>&1 | grep -E "^FAIL|cases" |
            tail -3 | tr '\n' ' ')"
done
timeout 200 $X/test_cuda_model >/tmp/tcm.log 2>&1
echo "test_cuda_model: exit $?, $(grep -c '^ok' /tmp/tcm.log) ok, $(grep -c '^FAIL' /tmp/tcm.log) FAIL"
grep -E '^FAIL' /tmp/tcm.log | cut -c1-150
dec() { # CONFIG BATCH [bench options]: the bench's decode lines
    local c=$1 n=$2
    shift 2
    timeout 60 $X/ssm bench --config $c --device cuda --what decode --decode-steps ${STEPS:-200} --decode-batch $n "$@" 2>&1 |
        grep -iE '^decode|rror' | tr -s ' ' | cut -c1-150 | tr '\n' ' '
}
t "a tiny model's step alone and with three others at once (induction heads' Mamba-1 at batch 8: the paper preset)"
tiny() { # OUT: 300 steps of the paper preset's induction model, its median step in ms
    timeout 90 $X/ssm train --task induction:seq=256 --d-model 64 --n-layer 2 --layers m --batch 8 --steps 300 \
        --warmup 20 --eval-every 1000 --lr 1e-3 --sample 0 --quiet --device cuda --bf16 --overwrite --out "$1" \
        --threads 2 >"$1.log" 2>&1 || tail -2 "$1.log"
}
tiny /tmp/tiny0 && med /tmp/tiny0 "alone"
for i in 1 2 3 4; do tiny /tmp/tiny$i & done
wait
for i in 1 2 3 4; do med /tmp/tiny$i "one of four at once"; done
t "attention kernels and training steps, bf16, every binary built"
for X2 in .devbuild/*/; do
    [ -x "$X2/ssm" ] && [ "$(basename "$X2")" != tdec ] || continue # (tdec's training is main's)
    for s in 8x2048 1x16384; do
        echo "$(basename "$X2") attention kernels ${s}: $("$X2/bench_cuda_attn" "${s%x*}" "${s#*x}" 12 12 64 2>&1 |
            awk '/^(forward|backward) \(/ {printf "%s %s ms %s TFLOP/s  ", $1, $(NF-1), $NF}')"
    done
    for cs in d768x24:8x2048 d768x24:1x16384 t768x12:8x2048 t768x12:1x16384; do
        c=${cs%%:*} bt=${cs#*:}
        echo "$(basename "$X2") $c ${bt}: $(timeout 90 "$X2/ssm" bench --config "$c" --device cuda --what train \
            --batch "${bt%x*}" --seq-len "${bt#*x}" --steps 5 --bf16 2>&1 | grep -E '^train|rror' | tr -s ' ')"
    done
done
t fused decode
for w in --bf16 --int8 ''; do echo "d768x24 B1 ${w:-float32}: $(dec d768x24 1 $w)"; done
echo "d768x24 B4 bf16: $(dec d768x24 4 --bf16)"
echo "m2x24 B1 bf16: $(dec m2x24 1 --bf16)"
t "fused SSD (SSM_SSD_FUSED, SSM_GN_FUSED at 2, the default, 1 and 0): their GPU tests, then the m2x24 step"
X=$M
for f in 2 1 0; do
    echo "SSM_SSD_FUSED=$f test_ops ssd: $(SSM_SSD_FUSED=$f timeout 120 $X/test_ops ssd 2>&1 | grep -E "^FAIL|cases" |
        tail -4 | tr '\n' ' ')"
    echo "SSM_GN_FUSED=$f test_ops gated: $(SSM_GN_FUSED=$f timeout 120 $X/test_ops gated 2>&1 | grep -E "^FAIL|cases" |
        tail -4 | tr '\n' ' ')"
done
for f in 2 1; do
    SSM_SSD_FUSED=$f SSM_GN_FUSED=$f timeout 200 $X/test_cuda_model >/tmp/tcm.log 2>&1
    echo "both at $f, test_cuda_model: exit $?, $(grep -c '^ok' /tmp/tcm.log) ok, $(grep -c '^FAIL' /tmp/tcm.log) FAIL"
done
m2() { # FUSED BATCH LENGTH [bench options] (GN: the gated norm's knob, default 2)
    SSM_SSD_FUSED=$1 SSM_GN_FUSED=${GN:-2} timeout 60 $X/ssm bench --config m2x24 --device cuda --what train \
        --batch "$2" --seq-len "$3" --steps 5 --bf16 "${@:4}" 2>&1
}
for round in 1 2; do
    for f in 2 1 0; do echo "m2x24 8x2048 fused=$f: $(m2 $f 8 2048 | grep -E '^train|rror' | tr -s ' ')"; done
done
echo "m2x24 8x2048 fused=0 GN=0: $(GN=0 m2 0 8 2048 | grep -E '^train|rror' | tr -s ' ')"
for f in 2 1 0; do echo "m2x24 1x16384 fused=$f: $(m2 $f 1 16384 | grep -E '^train|rror' | tr -s ' ')"; done
for f in 2 0; do
    echo "m2x24 profile fused=$f: $(m2 $f 8 2048 --profile | grep -E '^ssd|^by kind' | tr -s ' ' | tr '\n' '|')"
done
SSM_KERNEL_TIMES=1 m2 1 8 2048 | grep -iE '^kernel|ssd' | cut -c1-80
for X2 in .devbuild/tdec "$M"; do # the fused Transformer decode (main, or a tdec branch's where built)
    [ -x "$X2/ssm" ] && [ -x "$X2/test_cuda_decode_fused" ] && break
done
if [ -x "$X2/ssm" ]; then # its GPU test, then op by op vs fused
    X=$X2
    t "fused Transformer decode ($(basename $X))"
    timeout 200 $X/test_cuda_decode_fused >/tmp/tdf.log 2>&1
    echo "tdec test_cuda_decode_fused: exit $?, $(grep -c '^ok' /tmp/tdf.log) ok, $(grep -c '^FAIL' /tmp/tdf.log) FAIL"
    grep -E '^FAIL' /tmp/tdf.log | cut -c1-200
    tdd() { STEPS=50 dec t768x12 "$@" --contexts 1K,8K; }
    for w in '' --bf16; do
        echo "t768x12 ${w:-float32} op by op: $(tdd 1 $w)"
        echo "t768x12 ${w:-float32} fused: $(SSM_DECODE_FUSED=1 tdd 1 $w)"
    done
    echo "t768x12 B4 bf16 op by op: $(tdd 4 --bf16)"
    echo "t768x12 B4 bf16 fused: $(SSM_DECODE_FUSED=1 tdd 4 --bf16)"
    echo "t768x12 int8 fused: $(SSM_DECODE_FUSED=1 tdd 1 --int8)"
    SSM_DECODE_FUSED=1 SSM_DECODE_TRACE=20 timeout 60 $X/ssm bench --config t768x12 --device cuda --what decode \
        --decode-steps 50 --decode-batch 1 --contexts 8K --bf16 2>&1 | grep -v '^\s*$' | tail -14
fi
t end
