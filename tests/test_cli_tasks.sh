#!/usr/bin/env bash
# The command line of synthetic tasks and filler bytes (ssm train / eval --task, --noise-rate): a bad SPEC, rate or
# byte is a one-line error that leaves nothing behind; a task run logs val_loss and val_acc and ssm eval prints
# "accuracy X loss Y", also at a sequence far longer than the attention cache the model was trained with; eval
# --noise-rate reports bits per real byte; --resume with nothing but --out restores the task or the filler and
# continues bitwise. Prints "ok - ..." / "FAIL - ..." lines.
. "$(dirname "$0")/cli_common.sh"

small=(--d-model 16 --n-layer 2 --d-state 4 --n-heads 2 --batch 4 --warmup 1 --eval-every 3 --val-seqs 8 --threads 1
    --sample 0)
tr=("$SSM" train "${small[@]}" --quiet --steps 4)

# --- one-line errors, nothing left behind ---
expect_error "train: unknown task" "unknown task; expected mqar:" "${tr[@]}" --out "$dir/e" --task bogus
expect_error "train: mqar too short for its pairs" "at least 4 x pairs = 32" "${tr[@]}" --out "$dir/e" \
    --task mqar:seq=30,pairs=8
expect_error "train: a key of another task" "induction takes seq and vocab, not 'pairs'" "${tr[@]}" --out "$dir/e" \
    --task induction:pairs=2
expect_error "train: vocab past the bytes" "larger than the byte vocabulary" "${tr[@]}" --out "$dir/e" \
    --task selcopy:vocab=300
expect_error "train: --task with --data" "drop --data" "${tr[@]}" --out "$dir/e" --task induction:seq=32 \
    --data "$dir/text.txt"
expect_error "train: --seq-len against the task's seq" "differs from the task's seq=32" "${tr[@]}" --out "$dir/e" \
    --task induction:seq=32 --seq-len 64
expect_error "train: --noise-rate 1" "--noise-rate must be in [0, 1)" "${tr[@]}" --out "$dir/e" \
    --data "$dir/text.txt" --noise-rate 1
expect_error "train: --noise-rate -0.25" "--noise-rate must be in [0, 1)" "${tr[@]}" --out "$dir/e" \
    --data "$dir/text.txt" --noise-rate -0.25
expect_error "train: --noise-byte 256" "--noise-byte must be a byte" "${tr[@]}" --out "$dir/e" \
    --data "$dir/text.txt" --noise-rate 0.5 --noise-byte 256
expect_error "train: --noise-rate with --task" "not into a --task" "${tr[@]}" --out "$dir/e" --task induction:seq=32 \
    --noise-rate 0.5
expect_error "train: --val-seqs 0" "--val-seqs must be at least 1" "${tr[@]}" --out "$dir/e" \
    --task induction:seq=32 --val-seqs 0
[ -e "$dir/e" ] && fail "a refused --task or --noise-rate left a run directory" ||
    ok "a refused --task or --noise-rate leaves no run directory"

# --- a task run, and eval --task ---
if "${tr[@]}" --steps 6 --task induction:seq=32 --layers ma --max-context 32 --out "$dir/ind" 2>"$dir/err" &&
    valid_jsonl "$dir/ind/metrics.jsonl" &&
    python3 -c "
import json, sys
vals = [o for o in map(json.loads, open(sys.argv[1])) if 'val_loss' in o]
assert [o['step'] for o in vals] == [3, 6] and all(0 <= o['val_acc'] <= 1 and 'val_bpb' not in o for o in vals)
v = json.load(open(sys.argv[2]))
assert 0 <= v['val_acc'] <= 1" "$dir/ind/metrics.jsonl" "$dir/ind/best/validation.json"; then
    ok "train --task logs val_loss and val_acc at each validation (and best/validation.json val_acc)"
else
    fail "train --task logs val_loss and val_acc at each validation: $(head -c 300 "$dir/err")"
fi
line='^accuracy [0-9.]+ loss [0-9.]+ \(nats per answer; 256 answers in 256 sequences of 32 positions\)$'
if "$SSM" eval --model "$dir/ind" --task induction:seq=32 --quiet --threads 1 >"$dir/out" && grep -Eq "$line" "$dir/out"; then
    ok "eval --task prints accuracy and loss over the answers"
else
    fail "eval --task prints accuracy and loss over the answers: $(cat "$dir/out")"
fi
# trained at 32 with a cache of 32: scored at 2000 (the cache sized from the request), chunked
line='^accuracy [0-9.]+ loss [0-9.]+ \(nats per answer; 3 answers in 3 sequences of 2000 positions\)$'
if "$SSM" eval --model "$dir/ind" --task induction:seq=2000 --n-seqs 3 --batch 2 --chunk 300 --quiet --threads 1 \
    >"$dir/out" 2>"$dir/err" && grep -Eq "$line" "$dir/out"; then
    ok "eval --task at 60x the training length and the attention cache"
else
    fail "eval --task at 60x the training length and the attention cache: $(cat "$dir/out" "$dir/err")"
fi
expect_error "eval: bad SPEC" "seq must be at least 4" "$SSM" eval --model "$dir/ind" --task induction:seq=2
expect_error "eval: --task and --data" "choose one" "$SSM" eval --model "$dir/ind" --task induction --data "$dir/text.txt"
expect_error "eval: neither --task nor --data" "--data FILE or --task SPEC is required" "$SSM" eval --model "$dir/ind"
expect_error "eval: --n-seqs 0" "--n-seqs and --batch must be at least 1" "$SSM" eval --model "$dir/ind" \
    --task induction --n-seqs 0
expect_error "eval: --noise-rate 1.5" "--noise-rate must be in [0, 1)" "$SSM" eval --model "$dir/ind" \
    --data "$dir/text.txt" --noise-rate 1.5

# --- --resume with nothing but --out restores the task or the filler, and the run ends bitwise ---
same_run() { # same_run A B: the same weights, moments and logged losses and validations
    cmp -s "$1/checkpoint/model.safetensors" "$2/checkpoint/model.safetensors" &&
        cmp -s "$1/checkpoint/optimizer.safetensors" "$2/checkpoint/optimizer.safetensors" &&
        [ "$(python3 -c "
import json, sys
for o in map(json.loads, open(sys.argv[1])): print(o['step'], o.get('loss'), o.get('val_loss'), o.get('val_acc'), o.get('val_bpb'))" "$1/metrics.jsonl")" = \
        "$(python3 -c "
import json, sys
for o in map(json.loads, open(sys.argv[1])): print(o['step'], o.get('loss'), o.get('val_loss'), o.get('val_acc'), o.get('val_bpb'))" "$2/metrics.jsonl")" ]
}
for what in task noise; do
    if [ $what = task ]; then src=(--task selcopy:seq=24,tokens=4,vocab=8); else
        src=(--data "$dir/text.txt" --seq-len 32 --noise-rate 0.3 --noise-byte 7 --eval-bytes 2000); fi
    "${tr[@]}" --steps 8 "${src[@]}" --out "$dir/$what-a" 2>"$dir/err" || fail "$what: the uninterrupted run: $(cat "$dir/err")"
    "${tr[@]}" --steps 8 "${src[@]}" --out "$dir/$what-b" --stop-after 3 2>"$dir/err" ||
        fail "$what: the first part: $(cat "$dir/err")"
    if "$SSM" train --resume --out "$dir/$what-b" --quiet --threads 1 --sample 0 2>"$dir/err" && same_run "$dir/$what-a" "$dir/$what-b"; then
        ok "--resume alone restores the $what options and ends bitwise equal to the uninterrupted run"
    else
        fail "--resume alone restores the $what options and ends bitwise equal to the uninterrupted run: $(cat "$dir/err")"
    fi
done

# --- filler: the progress line and eval say bits per real byte ---
if "$SSM" train "${small[@]}" --steps 3 --data "$dir/text.txt" --seq-len 32 --noise-rate 0.5 \
    --out "$dir/loud" 2>"$dir/err" && grep -q "val [0-9.]* bits/real byte" "$dir/err" &&
    grep -q "validation [0-9.]* bits/real byte" "$dir/err"; then
    ok "train --noise-rate reports bits per real byte"
else
    fail "train --noise-rate reports bits per real byte: $(tail -3 "$dir/err")"
fi
line='^loss [0-9.]+ nats/real byte, [0-9.]+ bits per real byte \([0-9]+ real bytes scored; filler byte 0 is [0-9]+ of the [0-9]+ stream bytes\)$'
if "$SSM" eval --model "$dir/noise-a" --data "$dir/text.txt" --noise-rate 0.5 --quiet --threads 1 >"$dir/out" &&
    grep -Eq "$line" "$dir/out"; then
    ok "eval --noise-rate prints bits per real byte"
else
    fail "eval --noise-rate prints bits per real byte: $(cat "$dir/out")"
fi
if "$SSM" train --help | grep -q -- "--task" && "$SSM" train --help | grep -q -- "--noise-rate" &&
    "$SSM" eval --help | grep -q -- "--n-seqs"; then
    ok "--help lists --task, --noise-rate and --n-seqs"
else
    fail "--help lists --task, --noise-rate and --n-seqs"
fi
exit $((fails > 0))
