#!/usr/bin/env bash
# Trains small Transformers with ssm (on the CPU: seconds), then checks with tests/hf_check.py that Hugging Face
# transformers loads each saved directory unchanged and computes what ssm computes (bits per byte, greedy
# continuation). Runs where transformers is installed (the GPU machine); ends with "N passed, N failed".
#   [ONLY=NAME] tests/gpu/hf_roundtrip.sh [SSM] [TEXT]      (defaults: build/ssm, data/tinyshakespeare.txt)
set -u
cd "$(dirname "$0")/../.."
ssm=${1:-build/ssm}
text=${2:-data/tinyshakespeare.txt}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
head -c 400000 "$text" >"$work/train.txt"
# scored as one chunk (--chunk 4096): ssm eval gives an attention model each chunk as its context, transformers the text
tail -c 3000 "$text" >"$work/eval.txt"
pass=0 fail=0
check() { # NAME, then ssm train options (ONLY=NAME runs that one alone)
    local name=$1; shift
    [ -n "${ONLY:-}" ] && [ "$ONLY" != "$name" ] && return
    local run="$work/$name"
    "$ssm" train --data "$work/train.txt" --out "$run" --quiet --sample 0 --steps 60 --eval-every 60 \
        --batch 8 --seq-len 64 --d-model 64 --n-layer 4 --seed 7 "$@" || { echo "FAIL - $name: ssm train"; fail=$((fail + 1)); return; }
    local bpb
    bpb=$("$ssm" eval --model "$run/checkpoint" --data "$work/eval.txt" --chunk 4096 --quiet | sed -n 's/.*[^0-9.]\([0-9.]*\) bits.*/\1/p')
    "$ssm" generate --model "$run/checkpoint" --prompt "ROMEO:" -n 48 --temperature 0 --no-echo >"$work/$name.cont"
    echo "== $name: $(grep -o '"architectures": *\[[^]]*\]' "$run/checkpoint/config.json"), ssm: $bpb bits/byte"
    if python3 tests/hf_check.py "$run/checkpoint" "$work/eval.txt" "ROMEO:" 48 "$bpb" "$work/$name.cont"; then
        echo "ok - $name loads in transformers with ssm's numbers"; pass=$((pass + 1))
    else
        echo "FAIL - $name: transformers disagrees"; fail=$((fail + 1))
    fi
}
check llama_gqa --layers af --n-heads 4 --n-kv-heads 2 --rope-theta 500000
check llama_mqa --layers af --n-heads 4 --n-kv-heads 1 --head-dim 32 --d-ff 96
check mistral_window --layers af --n-heads 2 --sliding-window 16
# NemotronH: Mamba-2, attention without rotary positions, the relu2 MLP (8 Mamba heads of 16 in 2 groups)
check nemotron_h --layers MaMf --n-heads 4 --n-kv-heads 2 --rope-theta 0 --mlp-act relu2 --d-ff 128 \
    --m2-d-state 16 --m2-head-dim 16 --m2-groups 2 --chunk-size 16
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
