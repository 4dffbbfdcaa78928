#!/usr/bin/env bash
# Interrupted training resumes exactly: a run is killed N times at random moments (kill -9 or SIGTERM,
# chosen at random), resumed with --resume after each, and must end with the same final model, bit for bit,
# and the same per-step losses as one uninterrupted run; metrics.jsonl must be valid JSONL with every step
# once, and the run directory must hold nothing but its files.
#   tests/test_interrupt.sh [N]   (default 10; the reliability goal was measured with 50)
#   SSM_DEVICE=cuda               train on the GPU (tests/gpu/run.sh does)
#   SSM_LAYERS=maf                another layer pattern (default m: Mamba-1; run_tests.sh also runs a hybrid)
#   SSM_TASK=SPEC                 train on a synthetic task (its seq 64) instead of the text (run_tests.sh: mqar)
#   SSM_NOISE=R                   the text with filler bytes at rate R (run_tests.sh: 0.5)
# Prints "ok - ..." / "FAIL - ..." lines.
N=${1:-10}
. "$(dirname "$0")/cli_common.sh"

python3 -c "
import random; random.seed(2)
words = ['the', 'state', 'space', 'model', 'reads', 'bytes', 'and', 'learns', 'of', 'a']
print(' '.join(random.choice(words) for _ in range(6000)))" >"$dir/words.txt"
steps=$((300 + 120 * N))
layers=${SSM_LAYERS:-m}
tag="${tag}layers $layers${SSM_TASK:+, task $SSM_TASK}${SSM_NOISE:+, filler at $SSM_NOISE}: "
source=(--data "$dir/words.txt" --seq-len 64 ${SSM_NOISE:+--noise-rate "$SSM_NOISE"})
[ -n "${SSM_TASK:-}" ] && source=(--task "$SSM_TASK" --val-seqs 16)
args=("${source[@]}" --d-model 32 --n-layer $((${#layers} > 1 ? ${#layers} : 2)) --layers "$layers" --d-state 4 --n-heads 4
    --n-kv-heads 2 --batch 4 --steps "$steps" --warmup 10
    --eval-every 37 --eval-bytes 2000 --sample 0 --quiet --threads 2 --device "${SSM_DEVICE:-cpu}")

# every line a JSON object; step lines once each, in order; validation lines once per step
valid_metrics() {
    python3 - "$1" <<'PY'
import json, sys
steps, vals = [], []
for n, line in enumerate(open(sys.argv[1], encoding="utf-8"), 1):
    if not line.endswith("\n"):
        sys.exit(f"line {n} is torn")
    o = json.loads(line)
    (vals if "val_loss" in o else steps).append(o["step"])
if steps != list(range(1, len(steps) + 1)):
    sys.exit("step lines are not 1, 2, 3, ... once each")
if len(vals) != len(set(vals)):
    sys.exit("a validation step appears twice")
PY
}

# per-step losses and validation losses, without the timings
losses() { python3 -c "
import json, sys
for line in open(sys.argv[1]):
    o = json.loads(line)
    print(o['step'], o.get('loss'), o.get('val_loss'))" "$1"; }

if ! "$SSM" train --out "$dir/a" "${args[@]}" 2>"$dir/err"; then
    fail "the uninterrupted run: $(cat "$dir/err")"
    exit 1
fi

RANDOM=7 # the kill schedule is the same every time (the moments within a step are not)
kills=0 term_ok=0 term_n=0 resume=(--overwrite) # until a checkpoint exists: start again
while :; do
    # a part killed just after its last step's checkpoint left nothing to train: a resume would be refused ("raise
    # --steps"), so the run is done (on a fast machine the parts can reach the end before the N-th kill)
    at=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["step"])' \
        "$dir/b/checkpoint/train_state.json" 2>/dev/null)
    [ "$at" = "$steps" ] && break
    logged=$(cat "$dir/b/metrics.jsonl" 2>/dev/null | wc -l)
    "$SSM" train --out "$dir/b" "${args[@]}" "${resume[@]}" 2>>"$dir/log" &
    pid=$!
    if [ "$kills" -lt "$N" ]; then
        # the random moment comes after this part's first step: on a busy machine starting alone can outlast the
        # sleep, and a part killed before its first step leaves nothing to resume (nor to test)
        for _ in $(seq 400); do
            [ "$(cat "$dir/b/metrics.jsonl" 2>/dev/null | wc -l)" -gt "$logged" ] || ! kill -0 "$pid" 2>/dev/null && break
            sleep 0.05
        done
        sleep "0.$((RANDOM % 5 + 1))$((RANDOM % 10))"
        if [ $((RANDOM % 2)) -eq 0 ]; then sig=KILL; else sig=TERM; fi
        kill -s "$sig" "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null # (no "Killed" notice from the shell)
    rc=$?
    [ -d "$dir/b/checkpoint" ] || [ -d "$dir/b/checkpoint.old" ] && resume=(--resume)
    [ "$rc" -eq 0 ] && break
    if [ "$kills" -ge "$N" ]; then
        fail "the last, uninterrupted part exited with $rc: $(tail -2 "$dir/log")"
        break
    fi
    kills=$((kills + 1))
    if [ "$sig" = TERM ]; then
        term_n=$((term_n + 1))
        # SIGTERM: exit 143 after a checkpoint of the last step, with nothing half-done left behind
        if [ "$rc" -eq 143 ] && valid_metrics "$dir/b/metrics.jsonl" 2>/dev/null &&
            [ ! -e "$dir/b/checkpoint.tmp" ] && [ ! -e "$dir/b/checkpoint.old" ] && [ ! -e "$dir/b/lock" ]; then
            term_ok=$((term_ok + 1))
        else
            echo "  SIGTERM $term_n: exit $rc; $(ls "$dir/b" | tr '\n' ' ')"
        fi
    fi
done
echo "  $kills interruptions ($term_n by SIGTERM), then a last part to step $steps"
if [ "$term_ok" -eq "$term_n" ]; then
    ok "SIGTERM saves the last step and exits 143 with valid metrics and no leftovers ($term_ok/$term_n)"
else
    fail "SIGTERM saves the last step and exits 143 with valid metrics and no leftovers ($term_ok/$term_n)"
fi
if err=$(valid_metrics "$dir/b/metrics.jsonl" 2>&1); then
    ok "after $kills interruptions metrics.jsonl is valid JSONL, every step once"
else
    fail "after $kills interruptions metrics.jsonl is valid JSONL, every step once: $err"
fi
if cmp -s "$dir/a/checkpoint/model.safetensors" "$dir/b/checkpoint/model.safetensors" &&
    cmp -s "$dir/a/checkpoint/optimizer.safetensors" "$dir/b/checkpoint/optimizer.safetensors" &&
    [ "$(losses "$dir/a/metrics.jsonl")" = "$(losses "$dir/b/metrics.jsonl")" ]; then
    ok "the interrupted run ends bitwise equal to the uninterrupted one (weights, moments, every loss)"
else
    fail "the interrupted run ends bitwise equal to the uninterrupted one (weights, moments, every loss)"
fi
left=$(ls -A "$dir/b" | tr '\n' ' ')
if [ "$left" = "best checkpoint metrics.jsonl " ]; then
    ok "the run directory holds only best/, checkpoint/ and metrics.jsonl"
else
    fail "the run directory holds only best/, checkpoint/ and metrics.jsonl: $left"
fi
exit $((fails > 0))
