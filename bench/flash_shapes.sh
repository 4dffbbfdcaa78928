#!/usr/bin/env bash
# Block shapes of the head_dim-64 flash attention kernels, tried side by side: the shapes are compile-time
# (#define FLASH_FWD_64, FLASH_DQ_64, FLASH_DKV_64 at the top of src/backend/cuda/attention_flash_{fwd,bwd}.cu:
# <head_dim, warps, row blocks of 16 a warp, keys (or queries, dK/dV) per step, blocks per SM>), so each variant is
# its own bench_cuda_attn.
#   bench/flash_shapes.sh build DIR   (any machine with nvcc) builds DIR/attn_0 (the shapes as committed) and
#                                     DIR/attn_1.. (the variants below), and checks every variant's kernels in the
#                                     CPU emulator (tests/emu) against the CPU's attention first
#   bench/flash_shapes.sh run DIR     (the GPU machine) times each at 8 x 2048 and 1 x 16384, 12 heads of 64, bf16
# A faster variant becomes the committed shape by editing those #defines.
set -euo pipefail
cd "$(dirname "$0")/.."
# fwd | dQ | dK/dV (the committed ones: 64, 8, 1, 64, 2 | 64, 8, 1, 64, 2 | 64, 4, 1, 64, 3): two row blocks a warp in
# all three kernels (emulated, 2026-12-06, not yet timed), in the forward alone, and as 8 warps of two
variants=("64, 4, 2, 64, 2|64, 4, 2, 32, 2|64, 4, 2, 32, 2" "64, 4, 2, 64, 2|64, 8, 1, 64, 2|64, 4, 1, 64, 3"
          "64, 8, 2, 32, 1|64, 8, 2, 32, 1|64, 8, 2, 32, 1")
mode=${1:-}; dir=${2:-}
[ -n "$dir" ] || { echo "usage: bench/flash_shapes.sh build|run DIR" >&2; exit 2; }
if [ "$mode" = run ]; then
    for b in "$dir"/attn_*; do
        for s in 8x2048 1x16384; do
            echo "$(basename "$b") ${s}: $("$b" "${s%x*}" "${s#*x}" 12 12 64 | awk '/^(forward|backward) \(/ {printf "%s %s ms %s TFLOP/s  ", $1, $(NF-1), $NF}')"
        done
    done
    exit 0
fi
[ "$mode" = build ] || { echo "usage: bench/flash_shapes.sh build|run DIR" >&2; exit 2; }
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
work=$(mktemp -d /tmp/ssm_flash_shapes.XXXXXX)
trap 'rm -rf "$work"' EXIT
git ls-files -co --exclude-standard | grep -v '^tests/fixtures/' | tar cf - -T - | tar xf - -C "$work"
cuda=src/backend/cuda
cp "$work/$cuda/attention_flash_fwd.cu" "$work/fwd.orig" && cp "$work/$cuda/attention_flash_bwd.cu" "$work/bwd.orig"
# the emulator links the CPU library of a build without CUDA
log=$work/make.log # the compilers' output, shown when a build fails
build() { make -C "$work" -s -j"$(nproc)" "$@" >>"$log" 2>&1 || { tail -30 "$log"; exit 1; }; }
build CUDA=0 MPI=0 build/libssm.a && cp "$work/build/libssm.a" "$work/libssm_cpu.a"
build clean
for i in $(seq 0 ${#variants[@]}); do
    if [ "$i" -gt 0 ]; then
        IFS='|' read -r fwd dq dkv <<<"${variants[$((i - 1))]}"
        sed "s/^#define FLASH_FWD_64 .*/#define FLASH_FWD_64 $fwd/" "$work/fwd.orig" >"$work/$cuda/attention_flash_fwd.cu"
        sed -e "s/^#define FLASH_DQ_64 .*/#define FLASH_DQ_64 $dq/" -e "s/^#define FLASH_DKV_64 .*/#define FLASH_DKV_64 $dkv/" \
            "$work/bwd.orig" >"$work/$cuda/attention_flash_bwd.cu"
        echo "attn_$i: fwd <$fwd>, dQ <$dq>, dK/dV <$dkv>"
    else
        echo "attn_0: as committed"
    fi
    build OPT="-O3 -march=x86-64-v3" MPI=0 build/gpu/bench_cuda_attn
    cp "$work/build/gpu/bench_cuda_attn" "$dir/attn_$i"
    # the same sources in the emulator (tests/emu/run.sh's build, on this variant's files): the hd-64 cases
    (cd "$work" && mkdir -p build/emu && cp libssm_cpu.a build/emu/libssm.a &&
        flags=(-std=c++17 -O2 -U_FORTIFY_SOURCE -w -include tests/emu/emu.h -Itests/emu/shim -Iinclude -Isrc
               -I"${CUDA_HOME:-/usr/local/cuda}/include") &&
        for k in fwd bwd; do
            sed -E 's/^([[:space:]]*)([^[:space:]].*)<<<(.*)>>>\((.*)\);/\1emu_launch(\2, \3, \4);/' \
                "$cuda/attention_flash_$k.cu" >"build/emu/attention_flash_$k.cpp"
            g++ "${flags[@]}" -I"$cuda" -c "build/emu/attention_flash_$k.cpp" -o "build/emu/attention_flash_$k.o"
        done &&
        python3 tests/emu/to_cpp.py "$cuda/attention.cu" >build/emu/attention.cpp && # (emu_attn's float32 cases)
        g++ "${flags[@]}" -I"$cuda" -c build/emu/attention.cpp -o build/emu/attention.o &&
        g++ "${flags[@]}" -c tests/emu/emu.cpp -o build/emu/emu.o && g++ "${flags[@]}" -c tests/emu/emu_attn.cpp -o build/emu/emu_attn.o &&
        g++ -o build/emu/emu_attn build/emu/emu.o build/emu/emu_attn.o build/emu/attention.o build/emu/attention_flash_*.o build/emu/libssm.a \
            -fopenmp -lopenblas -lm &&
        for c in 0 1 3 5; do EMU_CP_LATE=0 EMU_SKEW=1 build/emu/emu_attn $c && EMU_CP_LATE=1 EMU_SKEW=2 build/emu/emu_attn $c; done) |
        grep -E "^(ok|FAIL)" | sed "s/^/  /" | cut -c1-110
done
