#!/usr/bin/env bash
# Builds the GPU test and bench binaries for another machine (a GPU host without a compiler), with portable CPU
# flags, in a scratch copy of the working tree, and puts them in .devbuild/ (ignored by git) to carry there:
#   scripts/gpu_prebuild.sh        then, on the GPU machine (one call):
#   tests/gpu/run.sh .devbuild && bench/gpu_bench.sh .devbuild
# The CUDA runtime and cuBLASLt are linked dynamically from /usr/local/cuda/lib64, as on that machine.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/ssm_gpu_prebuild.XXXXXX)
trap 'rm -rf "$work"' EXIT
git ls-files -co --exclude-standard | grep -v '^tests/fixtures/' | tar cf - -T - | tar xf - -C "$work"
# MPI=0: the GPU machine has no OpenMPI libraries to load (one process per GPU via NCCL is not built yet)
make -C "$work" -s -j"$(nproc)" OPT="-O3 -march=x86-64-v3" MPI=0 cuda tests
rm -rf .devbuild && mkdir -p .devbuild
cp "$work"/build/ssm "$work"/build/test_ops "$work"/build/gpu/* .devbuild/
ls .devbuild
