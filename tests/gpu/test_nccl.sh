#!/usr/bin/env bash
# Several GPUs through NCCL (docs/distributed.md), on a machine with NVIDIA GPUs; prints ok/FAIL/skip lines.
#   1 GPU:   `--gpus 1` is bitwise the plain run on cuda:0; a --gpus count past the machine's is one line.
#   2 GPUs:  --gpus 2 x --batch B trains as 1 GPU x 2B (losses within reduction-order noise, float32 and bf16);
#            mpirun -np 2 --device cuda the same as --gpus 2; resume on the same count bitwise, on another count
#            within noise; a rank killed mid-run ends the job with one line, not a hang; so does a rank stuck
#            (stopped) mid-run, after SSM_NCCL_TIMEOUT.
# Skipped with a message where build/ssm has no NCCL or the machine has too few GPUs.
. "$(dirname "$0")/../cli_common.sh"

gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
if ! ldd "$SSM" 2>/dev/null | grep -q libnccl; then
    echo "skip - $SSM was built without NCCL (a CUDA build whose toolkit has nccl.h)"; exit 0
fi
if [ "$gpus" -lt 1 ]; then echo "skip - no GPU (nvidia-smi -L lists none)"; exit 0; fi
export SSM_NCCL_TIMEOUT=60 # a hang fails the test instead of the suite
run() { timeout 300 "$SSM" train "${opts[@]}" "$@"; }
opts=(--data "$dir/text.txt" --d-model 64 --n-layer 2 --d-state 8 --seq-len 64 --steps 20 --warmup 2 --eval-every 10
      --sample 0 --quiet --device cuda)

# same_losses A B TOL [FROM]: every step's loss of A/metrics.jsonl (from step FROM on) within TOL relative of B's
same_losses() {
    python3 - "$1/metrics.jsonl" "$2/metrics.jsonl" "$3" "${4:-1}" <<'PY'
import json, sys
def losses(p):
    return {r["step"]: r["loss"] for r in map(json.loads, open(p)) if "loss" in r and r["step"] >= int(sys.argv[4])}
a, b = losses(sys.argv[1]), losses(sys.argv[2])
assert a and a.keys() == b.keys(), f"steps differ: {sorted(a)} vs {sorted(b)}"
worst = max(abs(a[s] - b[s]) / abs(b[s]) for s in a)
print(f"  largest relative loss difference {worst:.3g} (tolerance {sys.argv[3]})")
assert worst <= float(sys.argv[3])
PY
}
same_model() { cmp -s "$1/checkpoint/model.safetensors" "$2/checkpoint/model.safetensors"; }

# --- one GPU ---
run --batch 8 --out "$dir/plain" && run --batch 8 --gpus 1 --out "$dir/g1" &&
    same_losses "$dir/g1" "$dir/plain" 0 && same_model "$dir/g1" "$dir/plain" &&
    ok "--gpus 1 is bitwise the plain run" || fail "--gpus 1 differs from the plain run"
expect_error "--gpus past the machine's count names it" "than this machine has ($gpus)" \
    "$SSM" train "${opts[@]}" --gpus $((gpus + 1)) --out "$dir/toomany"

if [ "$gpus" -lt 2 ]; then
    echo "skip - the 2-GPU tests need 2 GPUs (this machine has $gpus)"
    [ $fails -eq 0 ]; exit
fi

# --- 2 GPUs x B = 1 GPU x 2B ---
run --batch 4 --gpus 2 --out "$dir/g2" && same_losses "$dir/g2" "$dir/plain" 1e-4 &&
    ok "2 GPUs x batch 4 train as 1 GPU x batch 8 (float32)" || fail "2 GPUs x 4 vs 1 x 8 (float32)"
run --batch 8 --bf16 --out "$dir/plain16" && run --batch 4 --bf16 --gpus 2 --out "$dir/g2b" &&
    same_losses "$dir/g2b" "$dir/plain16" 2e-3 &&
    ok "2 GPUs x batch 4 train as 1 GPU x batch 8 (bf16: the shadow refreshed after the gather)" ||
    fail "2 GPUs x 4 vs 1 x 8 (bf16)"
run --batch 4 --gpus 2 --out "$dir/g2again" && same_losses "$dir/g2again" "$dir/g2" 0 &&
    same_model "$dir/g2again" "$dir/g2" && ok "--gpus 2 is deterministic (bitwise, twice)" ||
    fail "--gpus 2 twice differ"

# --- mpirun -np 2 --device cuda: the same job as --gpus 2 ---
if command -v mpirun >/dev/null && ldd "$SSM" | grep -q libmpi; then
    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 300 mpirun -np 2 --oversubscribe "$SSM" train \
        "${opts[@]}" --batch 4 --out "$dir/mpi2" && same_losses "$dir/mpi2" "$dir/g2" 1e-6 &&
        ok "mpirun -np 2 --device cuda trains as --gpus 2" || fail "mpirun -np 2 --device cuda vs --gpus 2"
    # mpirun adds its own banner to stderr: our ranks' lines are those starting with "ssm"
    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 120 mpirun -np 2 --oversubscribe "$SSM" train \
        "${opts[@]}" --device cuda:1 --batch 4 --out "$dir/mpibad" 2>"$dir/mpibad.err"
    rc=$?
    [ $rc -ne 0 ] && [ "$(grep -c '^ssm' "$dir/mpibad.err")" -eq 1 ] && grep -q "give --device cuda" "$dir/mpibad.err" &&
        ok "mpirun -np 2 --device cuda:1 is refused in one line" ||
        fail "mpirun -np 2 --device cuda:1 (exit $rc): $(cat "$dir/mpibad.err")"
else
    echo "skip - mpirun or an MPI build missing: mpirun -np 2 --device cuda not tested"
fi

# --- resume: the same count bitwise, another count within noise ---
run --batch 4 --gpus 2 --stop-after 10 --out "$dir/r22" && run --resume --gpus 2 --out "$dir/r22" &&
    same_losses "$dir/r22" "$dir/g2" 0 && same_model "$dir/r22" "$dir/g2" &&
    ok "--gpus 2 resumed on 2 GPUs is bitwise the uninterrupted run" || fail "resume 2 -> 2 GPUs"
run --batch 4 --gpus 2 --stop-after 10 --out "$dir/r21" && run --resume --out "$dir/r21" &&
    same_losses "$dir/r21" "$dir/g2" 1e-4 && ok "a 2-GPU run resumed on 1 GPU (batch 8) continues it" ||
    fail "resume 2 -> 1 GPU"
run --batch 8 --stop-after 10 --out "$dir/r12" && run --resume --gpus 2 --out "$dir/r12" &&
    same_losses "$dir/r12" "$dir/plain" 1e-4 && ok "a 1-GPU run resumed on 2 GPUs (batch 4 each) continues it" ||
    fail "resume 1 -> 2 GPUs"

# hit_a_rank NAME SIGNAL WHAT PATTERN [VAR=VALUE ...]: a two-GPU job into $dir/NAME (stderr NAME.err), with the
# variables set, whose first rank gets SIGNAL once the first checkpoint exists; the job must end within 60 s with a
# failing status and one line matching PATTERN (grep -E); WHAT names the case. Leaves victim (the rank's pid) set.
hit_a_rank() {
    local name=$1 sig=$2 what=$3 pattern=$4 rc=
    shift 4
    env "$@" "$SSM" train "${opts[@]}" --batch 4 --gpus 2 --steps 1000000 --eval-every 100 --out "$dir/$name" \
        2>"$dir/$name.err" &
    local job=$!
    for _ in $(seq 600); do [ -e "$dir/$name/checkpoint/train_state.json" ] && break; sleep 0.1; done
    victim=$(pgrep -P "$job" | head -1)
    [ -n "$victim" ] && kill "-$sig" "$victim"
    for _ in $(seq 600); do kill -0 "$job" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$job" 2>/dev/null; then
        kill -9 "$job"; fail "$what: the job was still running 60 s later"; return
    fi
    wait "$job"; rc=$?
    if [ -n "$victim" ] && [ "$rc" -ne 0 ] && [ "$(grep -c '^ssm' "$dir/$name.err")" -eq 1 ] &&
        grep -qE "$pattern" "$dir/$name.err"; then ok "$what ends the job with one line ($pattern)"
    else fail "$what (victim '$victim', exit $rc): $(cat "$dir/$name.err")"; fi
}

# --- a rank killed mid-run: one line, the job ends, no hang ---
hit_a_rank dies 9 "a rank killed mid-run" "killed by signal 9|NCCL reports"
sleep 1
[ -z "$(pgrep -f "$dir/dies")" ] && ok "no rank of the killed job is left" || fail "ranks left: $(pgrep -af "$dir/dies")"
[ -z "$(ls -A "$dir/dies" | grep nccl-id)" ] && ok "the NCCL id file is gone" || fail "the NCCL id file was left"

# --- a rank stuck mid-run (stopped: alive, so NCCL reports nothing): the device collective's timeout ends the job ---
hit_a_rank stuck STOP "a rank stuck mid-run (SSM_NCCL_TIMEOUT=10)" "has not finished after 10 s" SSM_NCCL_TIMEOUT=10
sleep 1
[ -n "$victim" ] && kill -9 "$victim" 2>/dev/null && fail "the stuck rank outlived the job (PR_SET_PDEATHSIG)"
[ $fails -eq 0 ]
