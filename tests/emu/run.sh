#!/usr/bin/env bash
# Builds the CUDA flash attention kernels for the CPU emulator (emu.h) and runs them against the CPU's attention
# (tests/emu/emu_attn.cpp), twice: cp.async copies done at issue with the warps drifting apart at random (a missing
# barrier before a stage is refilled shows), and copies done only at the wait (a missing wait shows). Needs
# build/libssm.a (make) and the CUDA headers (CUDA_HOME, default /usr/local/cuda; no GPU). Prints "ok - ..." per case.
#   tests/emu/run.sh [case index]
set -euo pipefail
cd "$(dirname "$0")/../.."
cuda_home=${CUDA_HOME:-/usr/local/cuda}
if [ ! -f "$cuda_home/include/cuda_bf16.h" ] || [ ! -f build/libssm.a ]; then
    echo "skip - emulated flash attention: needs $cuda_home/include (the CUDA headers) and build/libssm.a"
    exit 0
fi
out=build/emu
mkdir -p "$out"
flags=(-std=c++17 -O2 -g -U_FORTIFY_SOURCE -Wall -Wno-unknown-pragmas -Wno-unused-function -include tests/emu/emu.h
       -Itests/emu/shim -Iinclude -Isrc -I"$cuda_home/include")
for k in fwd bwd; do
    # the launches kernel<<<grid, block, smem>>>(args) as emu_launch(kernel, grid, block, smem, args)
    sed -E 's/^([[:space:]]*)([^[:space:]].*)<<<(.*)>>>\((.*)\);/\1emu_launch(\2, \3, \4);/' \
        src/backend/cuda/attention_flash_$k.cu > "$out/attention_flash_$k.cpp"
    g++ "${flags[@]}" -Isrc/backend/cuda -c "$out/attention_flash_$k.cpp" -o "$out/attention_flash_$k.o"
done
g++ "${flags[@]}" -c tests/emu/emu.cpp -o "$out/emu.o"
g++ "${flags[@]}" -c tests/emu/emu_attn.cpp -o "$out/emu_attn.o"
g++ -o "$out/emu_attn" "$out"/emu.o "$out"/emu_attn.o "$out"/attention_flash_*.o build/libssm.a -fopenmp -lopenblas -lm
rc=0
EMU_CP_LATE=0 EMU_SKEW=1 "$out/emu_attn" "$@" || rc=1
EMU_CP_LATE=1 EMU_SKEW=2 "$out/emu_attn" "$@" || rc=1
exit $rc
