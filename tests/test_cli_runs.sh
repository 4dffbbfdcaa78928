#!/usr/bin/env bash
# Training run directories, as a careless or hostile user treats them: nothing is lost or overwritten
# unasked, one run at a time owns a directory, interruptions save, metrics stay valid JSONL, checkpoints
# survive extra files, full disks and crashes between renames. Prints "ok - ..." / "FAIL - ..." lines.
# (tests/test_interrupt.sh kills runs at random moments and checks bitwise resume.)
. "$(dirname "$0")/cli_common.sh"

train() { "$SSM" train --data "$dir/text.txt" "${tiny[@]}" "$@"; }
run="$dir/run"
train --out "$run" 2>"$dir/err" || fail "train a tiny model: $(cat "$dir/err")"

# --- an existing run is never replaced unasked ---
cp -r "$run" "$dir/before"
expect_error "a new run into an existing run is refused, naming --resume" "--resume" train --out "$run"
check "the refused run left the earlier one byte for byte" diff -r "$dir/before" "$run"
if train --out "$run" --overwrite --seed 9 2>"$dir/err" && ! cmp -s "$run/checkpoint/model.safetensors" \
    "$dir/before/checkpoint/model.safetensors" && [ "$(grep -c '"loss"' "$run/metrics.jsonl")" -eq 4 ]; then
    ok "--overwrite replaces the earlier run"
else
    fail "--overwrite replaces the earlier run: $(cat "$dir/err")"
fi

# --- one run per directory ---
"$SSM" train --out "$dir/busy" --data "$dir/text.txt" --d-model 32 --n-layer 2 --d-state 4 --batch 4 --seq-len 64 \
    --steps 20000 --eval-every 50 --sample 0 --quiet 2>/dev/null &
pid=$!
for _ in $(seq 600); do [ -e "$dir/busy/checkpoint/train_state.json" ] && break; sleep 0.1; done # (a loaded machine)
resume() { "$SSM" train --out "$1" --resume --sample 0 --quiet "${@:2}"; }
expect_error "a second run on a busy directory is refused, naming the holder" "in use by another training run (pid $pid" \
    resume "$dir/busy"
expect_error "a second new run on a busy directory is refused too" "in use by another training run" \
    train --out "$dir/busy" --overwrite
# --- Ctrl-C saves at the end of the step and exits 130 ---
kill -INT "$pid"
wait "$pid"
rc=$?
step=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['step'])" "$dir/busy/checkpoint/train_state.json")
last=$(tail -1 "$dir/busy/metrics.jsonl" | python3 -c "import json,sys; print(json.load(sys.stdin)['step'])")
if [ "$rc" -eq 130 ] && [ "$step" = "$last" ] && [ ! -e "$dir/busy/lock" ]; then
    ok "SIGINT: a checkpoint of the last step ($step), exit 130, the lock released"
else
    fail "SIGINT: exit $rc, checkpoint at step $step, metrics at $last"
fi
check "metrics.jsonl after SIGINT is valid JSONL" valid_jsonl "$dir/busy/metrics.jsonl"

# --- metrics.jsonl: a torn line and entries past the checkpoint are dropped on resume ---
printf '{"step": 99999, "loss": 1.0}\n{"step": 100000, "lo' >>"$dir/busy/metrics.jsonl"
if resume "$dir/busy" --steps $((step + 3)) 2>"$dir/err" && valid_jsonl "$dir/busy/metrics.jsonl" &&
    ! grep -q "\"step\": 99999," "$dir/busy/metrics.jsonl" && grep -q "dropped 2 lines" "$dir/err"; then
    ok "--resume drops a torn last line and entries past the checkpoint"
else
    fail "--resume drops a torn last line and entries past the checkpoint: $(cat "$dir/err")"
fi
expect_error "--resume of a finished run asks for more --steps" "raise --steps" resume "$dir/busy" --steps $((step + 3))

# --- a resumed run keeps its shape; another data file is said ---
expect_error "--resume with another --d-model is refused" "keeps its model's shape" \
    train --out "$run" --resume --steps 6 --d-model 32
cp "$dir/text.txt" "$dir/other.txt"
if train --out "$run" --resume --steps 6 --data "$dir/other.txt" 2>"$dir/err" && grep -q "not the checkpoint's" "$dir/err"; then
    ok "--resume on another data file says so"
else
    fail "--resume on another data file says so: $(cat "$dir/err")"
fi
check "the same shape given again is accepted" train --out "$run" --resume --steps 8 --d-model 16 --n-layer 2

# --- non-finite numbers: null in metrics, and the step of the divergence is metrics' step ---
expect_error "a divergence is one line naming its step" "training diverged at step" \
    train --out "$dir/nan" --lr 100 --clip 0 --steps 30
div=$(sed 's/.*diverged at step \([0-9]*\).*/\1/' "$dir/err")
if valid_jsonl "$dir/nan/metrics.jsonl" && tail -1 "$dir/nan/metrics.jsonl" | grep -q "\"step\": $div, \"loss\": null"; then
    ok "the diverged step is in metrics.jsonl as null, under the same step number"
else
    fail "the diverged step is in metrics.jsonl as null, under the same step number ($div)"
fi
if train --out "$dir/noval" --val-fraction 0 2>"$dir/err" && valid_jsonl "$dir/noval/metrics.jsonl" &&
    ! grep -q val_loss "$dir/noval/metrics.jsonl" && [ -e "$dir/noval/checkpoint/model.safetensors" ]; then
    ok "--val-fraction 0: no validation lines, checkpoints still saved"
else
    fail "--val-fraction 0: $(cat "$dir/err")"
fi

# --- --val-data: the same bytes as a file whose tail is held out, so the same run ---
head -c 12000 "$dir/text.txt" >"$dir/train_part.txt"
tail -c +12001 "$dir/text.txt" | head -c 4000 >"$dir/val_part.txt"
cat "$dir/train_part.txt" "$dir/val_part.txt" >"$dir/both.txt" # 16000 bytes, the last quarter the validation file
if "$SSM" train --data "$dir/train_part.txt" --val-data "$dir/val_part.txt" --out "$dir/vfile" "${tiny[@]}" \
    2>"$dir/err" && "$SSM" train --data "$dir/both.txt" --val-fraction 0.25 --out "$dir/vtail" "${tiny[@]}" \
    2>>"$dir/err" && python3 - "$dir/vfile/metrics.jsonl" "$dir/vtail/metrics.jsonl" <<'PY'
import json, sys
def losses(p):  # every loss and validation, not the timings
    return [{k: v for k, v in json.loads(l).items() if k in ("step", "loss", "val_loss", "val_bpb")} for l in open(p)]
a, b = losses(sys.argv[1]), losses(sys.argv[2])
assert a == b and sum("val_loss" in r for r in a) == 2, (a, b)
PY
then
    ok "--val-data F trains and validates as the file of --data then F with that tail held out"
else
    fail "--val-data F trains and validates as the file of --data then F with that tail held out: $(cat "$dir/err")"
fi
if "$SSM" train --out "$dir/vfile" --resume --steps 6 --sample 0 --quiet 2>"$dir/err" &&
    python3 -c "import json,sys; assert json.load(open(sys.argv[1]))['val_data'] == sys.argv[2]" \
        "$dir/vfile/checkpoint/train_state.json" "$dir/val_part.txt" &&
    [ "$(grep -c val_loss "$dir/vfile/metrics.jsonl")" -eq 3 ]; then
    ok "--resume keeps the run's --val-data"
else
    fail "--resume keeps the run's --val-data: $(cat "$dir/err")"
fi

# --- a collapse to uniform output is warned about; best/ keeps the best model ---
train --out "$dir/collapse" --lr 10 --min-lr 0 --clip 0 --steps 30 --eval-every 10 2>"$dir/err"
check "a collapse to uniform output is warned about" grep -q "collapsed to uniform" "$dir/err"
if [ -e "$run/best/model.safetensors" ] && "$SSM" generate --model "$run/best" --prompt "the" -n 5 >/dev/null &&
    python3 -c "import json,sys; v=json.load(open(sys.argv[1])); assert v['val_bpb'] > 0" "$run/best/validation.json"; then
    ok "best/ holds a loadable model and its validation loss"
else
    fail "best/ holds a loadable model and its validation loss"
fi

# --- checkpoints: extra files, a leftover .tmp, a crash between the renames, a full disk ---
echo "my notes" >"$run/checkpoint/NOTES.txt"
mkdir -p "$run/checkpoint.tmp/sub" && echo junk >"$run/checkpoint.tmp/sub/x"
if train --out "$run" --resume --steps 10 2>"$dir/err" && [ "$(cat "$run/checkpoint/NOTES.txt")" = "my notes" ] &&
    [ ! -e "$run/checkpoint.tmp" ] && [ ! -e "$run/checkpoint.old" ]; then
    ok "saves carry a user's extra file along and clear a leftover checkpoint.tmp"
else
    fail "saves carry a user's extra file along and clear a leftover checkpoint.tmp: $(cat "$dir/err")"
fi
mv "$run/checkpoint" "$run/checkpoint.old" # as if killed between the two renames of a save
check "eval falls back to checkpoint.old" "$SSM" eval --model "$run" --data "$dir/text.txt" --quiet >/dev/null
check "generate falls back to checkpoint.old" "$SSM" generate --model "$run/checkpoint" -n 4 --prompt x >/dev/null
check "--resume falls back to checkpoint.old" train --out "$run" --resume --steps 12
if [ -d "$run/checkpoint" ] && [ ! -e "$run/checkpoint.old" ]; then ok "the next save replaces checkpoint.old"; else
    fail "the next save replaces checkpoint.old"; fi
cp -r "$run/checkpoint" "$dir/ckpt_before"
size=$(($(stat -c %s "$run/checkpoint/model.safetensors") / 1024 + 8)) # room for the weights, not the moments
(
    trap '' XFSZ # a write past the limit fails with EFBIG, as on a full disk, instead of killing the process
    ulimit -f "$size"
    export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 # a user error: exit(1) holding memory
    train --out "$run" --resume --steps 14 >"$dir/out" 2>"$dir/err"
)
rc=$?
if [ "$rc" -ne 0 ] && [ "$(wc -l <"$dir/err")" -le 3 ] && grep -q "optimizer.safetensors" "$dir/err" &&
    [ ! -e "$run/checkpoint.tmp" ] && diff -r "$dir/ckpt_before" "$run/checkpoint" >/dev/null; then
    ok "a full disk during a save: one error, no checkpoint.tmp, the previous checkpoint intact"
else
    fail "a full disk during a save (exit $rc): $(cat "$dir/err")"
fi
check "after a failed save, --resume continues" train --out "$run" --resume --steps 14

# --- a damaged checkpoint is refused in one line, never half-trusted ---
damage() { # damage NAME SUBSTRING PYTHON: a copy of the run, its checkpoint edited by PYTHON (p: the dir)
    rm -rf "$dir/dmg" && cp -r "$run" "$dir/dmg"
    python3 -c "p='$dir/dmg/checkpoint'; $3" || fail "$1: could not damage the checkpoint"
    expect_error "$1" "$2" "$SSM" train --out "$dir/dmg" --resume --steps 100 --quiet --sample 0
}
edit_state='import json; f=p+"/train_state.json"; s=json.load(open(f)); s.update(%s); json.dump(s, open(f, "w"))'
damage "train_state.json: seq_len past an int" "out of range" "$(printf "$edit_state" '{"seq_len": 4294967304}')"
damage "train_state.json: lr of 1e300" "out of range" "$(printf "$edit_state" '{"lr": 1e300}')"
damage "train_state.json: a data_rng that is not a count" "invalid step, data_rng" "$(printf "$edit_state" '{"data_rng": "-1"}')"
damage "train_state.json: a negative step" "invalid step" "$(printf "$edit_state" '{"step": -3}')"
damage "optimizer.safetensors: an adam_step that is not a count" "is not a step count" \
    'f=p+"/optimizer.safetensors"; b=open(f,"rb").read(); i=b.index(b"\"adam_step\": \"")+14; j=b.index(b"\"",i); open(f,"wb").write(b[:i]+b"-"*(j-i)+b[j:])'
damage "optimizer.safetensors: a NaN moment" "is invalid" \
    'import struct; f=p+"/optimizer.safetensors"; b=bytearray(open(f,"rb").read()); n=struct.unpack("<Q",b[:8])[0]; b[8+n:12+n]=struct.pack("<f",float("nan")); open(f,"wb").write(b)'

exit $((fails > 0))
