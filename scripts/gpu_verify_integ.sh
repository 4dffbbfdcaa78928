#!/usr/bin/env bash
# The GPU verification of this branch (flash attention, CUDA Mamba-2, the segmented scan), in one device call:
#   scripts/gpu_prebuild.sh, then on the GPU machine: B=.devbuild scripts/gpu_verify_integ.sh   (needs data/tinyshakespeare.txt;
#   MAIN=path/to/a main binary for the 8x2048 bitwise comparison)
set -u
cd "$(dirname "$0")/.."
B=${B:-.devbuild}
tests/gpu/run.sh $B
cs=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
for f in "attn_fwd bf16" "attn_bwd bf16"; do timeout 60 $cs --tool memcheck $B/test_ops "$f" 2>&1 | grep -E "ERROR SUMMARY|^FAIL"; done
timeout 60 $cs --tool racecheck $B/test_ops "bf16 B 2 T 300 H 4" 2>&1 | grep -E "HAZARD|RACECHECK SUMMARY|^FAIL"
timeout 60 $cs --tool memcheck $B/test_ops ssd_bwd 2>&1 | grep -E "ERROR SUMMARY|^FAIL"
echo "## d768x24 8x2048 bf16: integ vs main (91ebfdb) bits"
for b in $B/ssm ${MAIN:-$B/ssm}; do o=/tmp/bw$RANDOM; timeout 120 $b train --d-model 768 --n-layer 24 --batch 8 --seq-len 2048 --steps 3 --eval-every 3 --eval-bytes 65536 --sample 0 --device cuda --bf16 --data data/tinyshakespeare.txt --out $o --quiet >/dev/null 2>&1
  echo "$b: $(grep -o '"loss": *[-0-9.e]*' $o/metrics.jsonl | tr '\n' ' ') $(md5sum < $o/checkpoint/model.safetensors | cut -c1-12)"; done
echo "## d768x24 bf16 (issue 13)"
for s in 8x2048 2x8192 1x16384 1x65536 1x262144; do
  timeout 90 $B/ssm bench --config d768x24 --device cuda --what train --batch ${s%x*} --seq-len ${s#*x} --steps 5 --bf16 2>&1 | grep -E "^train|rror"; done
timeout 60 $B/ssm bench --config d768x24 --device cuda --what train --batch 1 --seq-len 16384 --steps 3 --bf16 --profile 2>&1 | grep -E "scan|conv|by kind"
echo "## t768x12 bf16 (issue 18)"
for s in 8x2048 2x8192 1x16384; do
  timeout 90 $B/ssm bench --config t768x12 --device cuda --what train --batch ${s%x*} --seq-len ${s#*x} --steps 5 --bf16 --profile 2>&1 | grep -E "^train|attn|matmul|by kind|rror"; done
for s in 8x2048 1x16384; do timeout 60 $B/bench_cuda_attn ${s%x*} ${s#*x} 12 12 64; done
timeout 60 python3 bench/torch_attn_bench.py --shapes 8x2048,1x16384
echo "## m2x24 bf16 (issue 14)"
timeout 90 $B/ssm bench --config m2x24 --device cuda --what train --batch 8 --seq-len 2048 --steps 5 --bf16 --profile 2>&1 | grep -E "^train|ssd|gated|by kind|rror"
timeout 60 $B/ssm bench --config m2x24 --device cuda --what decode --decode-batch 64 --decode-steps 50 --bf16 2>&1 | grep -E "^decode|rror"
