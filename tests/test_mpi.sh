#!/usr/bin/env bash
# Data-parallel training over MPI (docs/distributed.md): 2 ranks x batch B must train as 1 process x 2B (the same
# losses within float32 reduction-order noise), resume bitwise, resume on another number of ranks, and fail with
# one line, not a hang, on mismatched ranks or a dead one. Skipped (with a message) where build/ssm has no MPI or
# mpirun is missing. Prints "ok - ..." / "FAIL - ..." lines.
. "$(dirname "$0")/cli_common.sh"

if ! command -v mpirun >/dev/null || ! ldd "$SSM" 2>/dev/null | grep -q libmpi; then
    echo "skip - $SSM was built without MPI, or mpirun is missing (apt-get install libopenmpi-dev openmpi-bin)"
    exit 0
fi
# root in CI and containers; one thread per rank (2 ranks share the machine's cores); ranks that wait yield the CPU
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
export OMPI_MCA_mpi_yield_when_idle=1 OMPI_MCA_btl=self,vader
mpi() { timeout 120 mpirun -np "$1" --oversubscribe "${@:2}"; } # a hang fails the test instead of the suite
opts=(--data "$dir/text.txt" --d-model 16 --n-layer 2 --d-state 4 --seq-len 32 --warmup 1 --eval-every 2 --sample 0
      --quiet)

# same_losses A B [FROM]: every step's loss in A/metrics.jsonl (from step FROM on) within 1e-5 relative of B's
same_losses() {
    python3 - "$1/metrics.jsonl" "$2/metrics.jsonl" "${3:-1}" <<'PY'
import json, sys
def losses(p):
    return {r["step"]: r["loss"] for r in map(json.loads, open(p)) if "loss" in r and r["step"] >= int(sys.argv[3])}
a, b = losses(sys.argv[1]), losses(sys.argv[2])
assert a and a.keys() == b.keys(), f"steps differ: {sorted(a)} vs {sorted(b)}"
worst = max(abs(a[s] - b[s]) / abs(b[s]) for s in a)
assert worst <= 1e-5, f"largest relative loss difference {worst:.3g}"
PY
}
# mpi_error NAME SUBSTRING CMD...: non-zero exit, and exactly one line from our ranks (mpirun adds its own banner
# between dashed lines: not ours), containing SUBSTRING; every other rank stays quiet
mpi_error() {
    local name=$1 want=$2
    shift 2
    "$@" >"$dir/out" 2>"$dir/err"
    local rc=$? lines
    lines=$(grep -c '^ssm' "$dir/err")
    if [ $rc -ne 0 ] && [ "$lines" -eq 1 ] && grep '^ssm' "$dir/err" | grep -qF -- "$want"; then
        ok "$name"
    else
        fail "$name (exit $rc, $lines lines from ssm, wanted '$want'): $(head -c 300 "$dir/err")"
    fi
}
same_ckpt() { cmp -s "$1/checkpoint/model.safetensors" "$2/checkpoint/model.safetensors" &&
    cmp -s "$1/checkpoint/optimizer.safetensors" "$2/checkpoint/optimizer.safetensors" &&
    cmp -s "$1/checkpoint/train_state.json" "$2/checkpoint/train_state.json"; }

# --- 2 ranks x 2 = 1 process x 4: the same data, the same losses ---
"$SSM" train "${opts[@]}" --steps 4 --batch 4 --out "$dir/one" 2>"$dir/err" || fail "1 process, batch 4: $(cat "$dir/err")"
if mpi 2 "$SSM" train "${opts[@]}" --steps 4 --batch 2 --out "$dir/two" 2>"$dir/err" && same_losses "$dir/two" "$dir/one" \
    2>>"$dir/err"; then
    ok "2 ranks x batch 2 train as 1 process x batch 4 (losses within 1e-5)"
else
    fail "2 ranks x batch 2 train as 1 process x batch 4: $(tail -3 "$dir/err")"
fi
check "the 2-rank checkpoint records the job's batch (4), as a 1-process run" \
    grep -q '"batch": 4,' "$dir/two/checkpoint/train_state.json"

# --- the loss over scored positions that differ between ranks (filler bytes), with gradient accumulation ---
"$SSM" train "${opts[@]}" --steps 3 --batch 4 --grad-accum 2 --noise-rate 0.4 --out "$dir/one_noise" 2>"$dir/err" ||
    fail "1 process with filler: $(cat "$dir/err")"
if mpi 2 "$SSM" train "${opts[@]}" --steps 3 --batch 2 --grad-accum 2 --noise-rate 0.4 --out "$dir/two_noise" \
    2>"$dir/err" && same_losses "$dir/two_noise" "$dir/one_noise" 2>>"$dir/err"; then
    ok "2 ranks = 1 process with filler bytes (uneven counts per rank) and --grad-accum 2"
else
    fail "2 ranks = 1 process with filler bytes and --grad-accum 2: $(tail -3 "$dir/err")"
fi

# --- 3 ranks: shards of the flat buffer (ZeRO-1's moments) of uneven length ---
"$SSM" train "${opts[@]}" --steps 3 --batch 3 --out "$dir/one3" 2>"$dir/err" || fail "1 process, batch 3: $(cat "$dir/err")"
if mpi 3 "$SSM" train "${opts[@]}" --steps 3 --batch 1 --out "$dir/three" 2>"$dir/err" &&
    same_losses "$dir/three" "$dir/one3" 2>>"$dir/err"; then
    ok "3 ranks x batch 1 train as 1 process x batch 3"
else
    fail "3 ranks x batch 1 train as 1 process x batch 3: $(tail -3 "$dir/err")"
fi

# --- bitwise resume on 2 ranks, and a 2-rank checkpoint resumed by 1 process (and the other way round) ---
if mpi 2 "$SSM" train "${opts[@]}" --steps 4 --batch 2 --stop-after 2 --out "$dir/half" 2>"$dir/err" &&
    cp -r "$dir/half" "$dir/half1" && cp -r "$dir/half" "$dir/half1b" &&
    mpi 2 "$SSM" train --out "$dir/half" --resume --threads 1 --sample 0 --quiet 2>>"$dir/err" && same_ckpt "$dir/half" "$dir/two"; then
    ok "2 ranks: 2 steps + 2 resumed = 4 steps, bit for bit"
else
    fail "2 ranks: 2 steps + 2 resumed = 4 steps, bit for bit: $(tail -3 "$dir/err")"
fi
if "$SSM" train --out "$dir/half1" --resume --batch 4 --threads 1 --sample 0 --quiet 2>"$dir/err" && same_losses "$dir/half1" "$dir/two" 3; then
    ok "a 2-rank checkpoint resumed by 1 process with --batch 4 goes on with the same losses"
else
    fail "a 2-rank checkpoint resumed by 1 process with --batch 4: $(tail -3 "$dir/err")"
fi
if "$SSM" train --out "$dir/half1b" --resume --threads 1 --sample 0 --quiet 2>"$dir/err" && same_ckpt "$dir/half1b" "$dir/half1"; then
    ok "--resume without --batch keeps the job's batch (1 process: 4)"
else
    fail "--resume without --batch keeps the job's batch: $(tail -3 "$dir/err")"
fi
"$SSM" train "${opts[@]}" --steps 4 --batch 4 --stop-after 2 --out "$dir/from_one" 2>"$dir/err"
if mpi 2 "$SSM" train --out "$dir/from_one" --resume --threads 1 --sample 0 --quiet 2>>"$dir/err" && same_losses "$dir/from_one" "$dir/one" 3
then
    ok "a 1-process checkpoint resumed by 2 ranks (each taking half its batch) goes on with the same losses"
else
    fail "a 1-process checkpoint resumed by 2 ranks: $(tail -3 "$dir/err")"
fi
mpi_error "a job batch that does not divide among the ranks is refused, naming --batch" "give --batch" \
    mpi 3 "$SSM" train --out "$dir/from_one" --resume --steps 6 --threads 1

# --- ranks that disagree: one line from one rank, a non-zero exit, no hang ---
head -c 15000 "$dir/text.txt" >"$dir/short.txt"
mpi_error "ranks reading different data are refused" "rank 1 reads other data than rank 0" \
    timeout 120 mpirun --oversubscribe -np 1 "$SSM" train "${opts[@]}" --steps 2 --batch 2 --out "$dir/diff" : \
    -np 1 "$SSM" train "${opts[@]}" --data "$dir/short.txt" --steps 2 --batch 2 --out "$dir/diff"
cp "$SSM" "$dir/ssm_other" && printf 'another build' >>"$dir/ssm_other"
mpi_error "ranks running different builds are refused" "rank 1 runs a different build of ssm than rank 0" \
    timeout 120 mpirun --oversubscribe -np 1 "$SSM" train "${opts[@]}" --steps 2 --batch 2 --out "$dir/diff" : \
    -np 1 "$dir/ssm_other" train "${opts[@]}" --steps 2 --batch 2 --out "$dir/diff"
mpi_error "a new run into an existing run is refused once, for all ranks" "already holds a training run" \
    mpi 2 "$SSM" train "${opts[@]}" --steps 4 --batch 2 --out "$dir/two"
if [ -x build/asan/ssm ]; then # the sanitizer build has no MPI: N copies must not each train alone
    ASAN_OPTIONS=detect_leaks=0 mpi 2 build/asan/ssm train "${opts[@]}" --steps 2 --batch 2 --out "$dir/asan" 2>"$dir/err"
    rc=$?
    # (each rank's line counted by its words: the two ranks' writes may interleave on the shared stderr)
    if [ $rc -ne 0 ] && [ "$(grep -o 'built without MPI: rebuild it' "$dir/err" | wc -l)" -eq 2 ] && [ ! -e "$dir/asan" ]; then
        ok "a build without MPI started by mpirun says to rebuild it, and trains nothing"
    else
        fail "a build without MPI started by mpirun (exit $rc): $(head -c 300 "$dir/err")"
    fi
fi

# --- SIGTERM to one rank (not rank 0): all stop at the same step, rank 0 saves, --resume ends bitwise equal ---
# (3000 steps, ~2 s: with 300 a loaded machine could finish the run before the signal reached it, 2026-12-07)
long=(--steps 3000 --batch 2 --eval-every 10000)
mpi 2 "$SSM" train "${opts[@]}" "${long[@]}" --out "$dir/whole" 2>"$dir/err" || fail "2 ranks, 3000 steps: $(cat "$dir/err")"
mpirun -np 2 --oversubscribe "$SSM" train "${opts[@]}" "${long[@]}" --out "$dir/stopped" >/dev/null 2>"$dir/err" &
job=$!
for _ in $(seq 300); do [ -s "$dir/stopped/metrics.jsonl" ] && break; sleep 0.05; done
rank1=
for p in $(ps -eo pid=,args= | awk -v d="$dir/stopped" '$0 ~ d && $2 ~ /ssm$/ {print $1}'); do
    tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=1 && rank1=$p
done
[ -n "$rank1" ] && kill -TERM "$rank1"
wait "$job"
rc=$?
at=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['step'])" "$dir/stopped/checkpoint/train_state.json"      2>/dev/null)
if [ "$rc" -ne 0 ] && [ -n "$at" ] && [ "$at" -lt 3000 ] &&
    mpi 2 "$SSM" train --out "$dir/stopped" --resume --threads 1 --sample 0 --quiet 2>"$dir/err" &&
    same_ckpt "$dir/stopped" "$dir/whole"; then
    ok "SIGTERM to rank 1 stops both ranks at step $at with a checkpoint; --resume ends bitwise equal"
else
    fail "SIGTERM to rank 1 (exit $rc, checkpoint at step '$at'): $(tail -3 "$dir/err")"
fi

# --- several ranks on GPUs (NCCL, docs/distributed.md): where this machine has none, or the build has no NCCL, one
# line for the job (tests/gpu/test_nccl.sh runs them on GPUs) ---
if ! nvidia-smi -L >/dev/null 2>&1; then
    mpi_error "2 ranks with --device cuda on a machine without GPUs: one line" "--device cpu" \
        mpi 2 "$SSM" train "${opts[@]}" --batch 2 --steps 2 --device cuda --out "$dir/gpu2"
elif ! ldd "$SSM" | grep -q libnccl; then
    mpi_error "2 ranks with --device cuda in a build without NCCL: one line" "built without NCCL" \
        mpi 2 "$SSM" train "${opts[@]}" --batch 2 --steps 2 --device cuda --out "$dir/gpu2"
fi

# --- a rank killed mid-run: the job ends (non-zero), the others do not wait forever ---
mpirun -np 2 --oversubscribe "$SSM" train "${opts[@]}" --steps 100000 --batch 2 --eval-every 50 --out "$dir/dies" \
    >/dev/null 2>"$dir/err" &
job=$!
for _ in $(seq 300); do [ -e "$dir/dies/checkpoint/train_state.json" ] && break; sleep 0.1; done
victim=$(ps -eo pid=,ppid=,args= | awk -v d="$dir/dies" '$0 ~ d && $3 ~ /ssm$/ {print $1}' | tail -1)
[ -n "$victim" ] && kill -9 "$victim"
for _ in $(seq 300); do kill -0 "$job" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$job" 2>/dev/null; then
    kill "$job"
    fail "a rank killed mid-run: the job was still running 30 s later"
else
    wait "$job"
    rc=$?
    if [ -n "$victim" ] && [ "$rc" -ne 0 ]; then ok "a rank killed mid-run ends the job (exit $rc), no hang"
    else fail "a rank killed mid-run (victim '$victim', exit $rc)"; fi
fi

[ "$fails" -eq 0 ]
