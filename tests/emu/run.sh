#!/usr/bin/env bash
# Builds the CUDA attention kernels (flash and float32), the fused decode kernels (Mamba and Transformer), the Mamba-2
# SSD, the Mamba-1 scan and the causal conv1d for the CPU emulator (emu.h) and runs them against the CPU's attention
# (tests/emu/emu_attn.cpp), the CPU's op-by-op decode step (emu_decode.cpp), the CPU's chunked SSD (emu_ssd.cpp;
# cuBLAS's batched products by emu_blas.cpp), the CPU's scan (emu_scan.cpp) and conv (emu_conv.cpp),
# twice: cp.async copies done at issue, with warps drifting apart and a cooperative launch's blocks taking turns in
# a random order (a missing barrier shows), and copies done only at the wait (a missing wait shows). Needs
# build/asan/libssm.a (make tests) and the CUDA headers (CUDA_HOME, default /usr/local/cuda; no GPU). Prints
# "ok - ..." per case. The CPU side comes from the sanitizer build's library because it is CPU-only whatever
# the machine: build/libssm.a holds the real kernels (same symbols, CUDA runtime) wherever nvcc was found.
#   tests/emu/run.sh [case index]        (the index picks a case of each program)
set -euo pipefail
cd "$(dirname "$0")/../.."
cuda_home=${CUDA_HOME:-/usr/local/cuda}
lib=build/asan/libssm.a
if [ ! -f "$cuda_home/include/cuda_bf16.h" ] || [ ! -f $lib ]; then
    echo "skip - emulated CUDA kernels: needs $cuda_home/include (the CUDA headers) and $lib (make tests)"
    exit 0
fi
out=build/emu
mkdir -p "$out"
flags=(-std=c++17 -O2 -g -U_FORTIFY_SOURCE -Wall -Wno-unknown-pragmas -Wno-unused-function -include tests/emu/emu.h
       -Itests/emu/shim -I"$out/inc" -Iinclude -Isrc -I"$cuda_home/include")
# each source as the emulator compiles it (launches as emu_launch, static shared memory as static locals), and so
# reduce.cuh (block_reduce), read through the copy in $out/inc
mkdir -p "$out/inc/backend/cuda"
for h in reduce ssd_common ssd_fused; do # (ssd_common.cuh and ssd_fused.cuh launch kernels)
    python3 tests/emu/to_cpp.py src/backend/cuda/$h.cuh > "$out/inc/backend/cuda/$h.cuh"
done
for k in attention attention_flash_fwd attention_flash_bwd decode_mamba1 decode_mamba2 decode_transformer ssd ssd_whole \
    scan conv1d; do
    python3 tests/emu/to_cpp.py src/backend/cuda/$k.cu > "$out/$k.cpp"
    g++ "${flags[@]}" -Isrc/backend/cuda -c "$out/$k.cpp" -o "$out/$k.o"
done
g++ "${flags[@]}" -c tests/emu/emu.cpp -o "$out/emu.o"
for t in emu_attn emu_decode emu_ssd emu_scan emu_conv emu_blas; do
    g++ "${flags[@]}" -c tests/emu/$t.cpp -o "$out/$t.o"
done
asan=(-fsanitize=address -fno-omit-frame-pointer)
# the library is built with ASan and UBSan, so every program links their runtimes
libs=($lib -fsanitize=address,undefined -fopenmp -lopenblas -lm)
g++ -o "$out/emu_attn" "$out"/emu.o "$out"/emu_attn.o "$out"/attention.o "$out"/attention_flash_*.o "${libs[@]}"
g++ -o "$out/emu_decode" "$out"/emu.o "$out"/emu_decode.o "$out"/decode_mamba*.o "$out"/decode_transformer.o \
    "${libs[@]}"
g++ -o "$out/emu_ssd" "$out"/emu.o "$out"/emu_ssd.o "$out"/ssd.o "$out"/ssd_whole.o "$out"/emu_blas.o "${libs[@]}"
g++ -o "$out/emu_scan" "$out"/emu.o "$out"/emu_scan.o "$out"/scan.o "${libs[@]}"
g++ -o "$out/emu_conv" "$out"/emu.o "$out"/emu_conv.o "$out"/conv1d.o "${libs[@]}"
# (fibers switch stacks under ASan's feet: no stack checks after return; leaks are the test's business elsewhere)
export ASAN_OPTIONS=detect_stack_use_after_return=0:detect_leaks=0
rc=0
for t in emu_attn emu_decode emu_scan emu_conv; do
    EMU_CP_LATE=0 EMU_SKEW=1 "$out/$t" "$@" || rc=1
    EMU_CP_LATE=1 EMU_SKEW=2 EMU_SMS=2 "$out/$t" "$@" || rc=1
done
EMU_SKEW=1 "$out/emu_ssd" "$@" || rc=1
EMU_CP_LATE=1 EMU_SKEW=2 EMU_SMS=2 "$out/emu_ssd" "$@" | grep -A1 fused || rc=1 # (the fused kernels' copies)
# the decode kernels once more under AddressSanitizer: a read or write outside the weights', states' and scratch
# buffers (host memory here) shows, which on the GPU only compute-sanitizer would see
for k in decode_mamba1 decode_mamba2 decode_transformer; do
    g++ "${flags[@]}" "${asan[@]}" -Isrc/backend/cuda -c "$out/$k.cpp" -o "$out/asan_$k.o"
done
g++ "${flags[@]}" "${asan[@]}" -c tests/emu/emu.cpp -o "$out/asan_emu.o"
g++ "${flags[@]}" "${asan[@]}" -c tests/emu/emu_decode.cpp -o "$out/asan_emu_decode.o"
g++ "${asan[@]}" -o "$out/asan_emu_decode" "$out"/asan_emu.o "$out"/asan_emu_decode.o "$out"/asan_decode_mamba*.o \
    "$out"/asan_decode_transformer.o "${libs[@]}"
# (with the trace's stamps and report, SSM_DECODE_TRACE, on: its reads and writes are checked too; its report dropped)
SSM_DECODE_TRACE=2 EMU_SKEW=3 "$out/asan_emu_decode" "$@" 2>&1 | grep -v -e '^decode trace:' -e '^  [a-z]' |
    sed 's/^ok - emulated/ok - AddressSanitizer, emulated/' || rc=1
exit $rc
