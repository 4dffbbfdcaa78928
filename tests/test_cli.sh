#!/usr/bin/env bash
# The command line on good and bad input: every user error is one line on stderr and a non-zero exit,
# and nothing half-written is left behind. Prints "ok - ..." / "FAIL - ..." lines.
. "$(dirname "$0")/cli_common.sh"

# a tiny trained model
if "$SSM" train --data "$dir/text.txt" --out "$dir/run" "${tiny[@]}" 2>"$dir/err"; then
    ok "train a tiny model"
else
    fail "train a tiny model: $(cat "$dir/err")"
fi
model="$dir/run/checkpoint"

# --- data files ---
: >"$dir/empty.txt"
printf 'abc' >"$dir/short.txt"
expect_error "missing data file" "nope.txt" "$SSM" train --data "$dir/nope.txt" --out "$dir/r1" "${tiny[@]}"
expect_error "empty data file" "empty" "$SSM" train --data "$dir/empty.txt" --out "$dir/r2" "${tiny[@]}"
expect_error "too-short data file" "too short" "$SSM" train --data "$dir/short.txt" --out "$dir/r3" "${tiny[@]}"
if [ ! -e "$dir/r1/checkpoint" ] && [ ! -e "$dir/r2/checkpoint" ] && [ ! -e "$dir/r3/checkpoint" ]; then
    ok "failed runs leave no checkpoint"
else
    fail "failed runs leave no checkpoint"
fi
expect_error "eval of a missing file" "nope.txt" "$SSM" eval --model "$model" --data "$dir/nope.txt"
expect_error "resume without a checkpoint" "no checkpoint" "$SSM" train --resume --out "$dir/none" "${tiny[@]}"

# a failed resume leaves the existing checkpoint byte for byte as it was
cp -r "$model" "$dir/before"
expect_error "resume onto a too-short file" "too short" "$SSM" train --resume --out "$dir/run" --data "$dir/short.txt"
if diff -r "$dir/before" "$model" >/dev/null; then ok "failed resume leaves the checkpoint intact"; else fail "failed resume leaves the checkpoint intact"; fi

# --- flags ---
expect_error "unknown train flag" "unknown option '--bogus'" "$SSM" train --bogus
expect_error "unknown generate flag" "unknown option '--foo'" "$SSM" generate --model "$model" --foo 1
expect_error "unknown command" "unknown command" "$SSM" frobnicate
expect_error "bad number" "expects an integer" "$SSM" train --steps ten
expect_error "missing value" "needs a value" "$SSM" generate --model
expect_error "missing --model" "--model DIR is required" "$SSM" generate --prompt hi
# every option range-checked before anything is created (none of these may crash or leave a run behind)
t=("$SSM" train --data "$dir/text.txt" --out "$dir/ranges" "${tiny[@]}")
expect_error "--eval-every 0" "--eval-every must be at least 1" "${t[@]}" --eval-every 0
expect_error "--eval-every -1" "--eval-every must be at least 1" "${t[@]}" --eval-every -1
expect_error "--threads 100000" "--threads must be in [0, 1024]" "${t[@]}" --threads 100000
expect_error "--threads -1 (generate)" "--threads must be in [0, 1024]" "$SSM" generate --model "$model" --threads -1
expect_error "--lr -1" "--lr must be positive" "${t[@]}" --lr -1
expect_error "--min-lr above --lr" "--min-lr must be in [0, --lr" "${t[@]}" --lr 1e-3 --min-lr 1e-2
expect_error "--warmup -5" "--warmup must be 0 or more" "${t[@]}" --warmup -5
expect_error "--clip -1" "--clip must be 0 (off) or positive" "${t[@]}" --clip -1
expect_error "--weight-decay -1" "--weight-decay must be 0 or more" "${t[@]}" --weight-decay -1
expect_error "--eval-bytes -1" "--eval-bytes must be 0 (all) or positive" "${t[@]}" --eval-bytes -1
expect_error "--stop-after -1" "--stop-after must be 0 (off) or positive" "${t[@]}" --stop-after -1
expect_error "--val-fraction 1" "--val-fraction must be in [0, 1)" "${t[@]}" --val-fraction 1
expect_error "--val-data with --val-fraction" "choose one" "${t[@]}" --val-data "$dir/text.txt" --val-fraction 0.2
expect_error "--val-data: a missing file" "$dir/nothing.txt" "${t[@]}" --val-data "$dir/nothing.txt"
printf 'short' >"$dir/short.txt"
expect_error "--val-data shorter than a window" "too short for validation" "${t[@]}" --val-data "$dir/short.txt"
expect_error "--val-data with --task" "drop --val-data" "$SSM" train --task induction:seq=32 --out "$dir/ranges" \
    --val-data "$dir/text.txt" --steps 2 --quiet
expect_error "--batch 0" "must be at least 1" "${t[@]}" --batch 0
expect_error "--batch x --seq-len too large" "bytes per micro-batch is too many" "${t[@]}" --batch 1000000 --seq-len 100000
expect_error "--sample -1" "--sample must be 0 (none) or more" "${t[@]}" --sample -1
expect_error "--d-model 0" "d_model = 0 is out of range" "${t[@]}" --d-model 0
expect_error "--resume with --overwrite" "contradict" "${t[@]}" --resume --overwrite
expect_error "a model larger than the machine" "more than the" "${t[@]}" --d-model 65536 --n-layer 4096
[ -e "$dir/ranges" ] && fail "a refused option left a run directory" || ok "refused options leave no run directory"
for c in train eval generate info bench; do
    if "$SSM" $c --help | grep -q "usage: ssm $c"; then ok "ssm $c --help"; else fail "ssm $c --help"; fi
done

# --- model directories ---
bad() { rm -rf "$dir/bad"; cp -r "$model" "$dir/bad"; }
st="$dir/bad/model.safetensors"
bad; head -c 1000 "$model/model.safetensors" >"$st"
expect_error "truncated safetensors" "model.safetensors" "$SSM" generate --model "$dir/bad" -n 4
bad; printf 'xxxxxxxx' | dd of="$st" bs=1 seek=8 conv=notrunc status=none
expect_error "corrupt safetensors header" "model.safetensors" "$SSM" generate --model "$dir/bad" -n 4
bad; printf '\xff\xff\xff\xff\xff\xff\x00\x00' | dd of="$st" bs=1 seek=0 conv=notrunc status=none
expect_error "header length past the end" "model.safetensors" "$SSM" eval --model "$dir/bad" --data "$dir/text.txt"
bad; sed -i 's/"state_size": 4/"state_size": 8/' "$dir/bad/config.json"
expect_error "config that does not match the tensors" "shape" "$SSM" generate --model "$dir/bad" -n 4
bad; sed -i 's/"num_hidden_layers": 2/"num_hidden_layers": 1/' "$dir/bad/config.json"
expect_error "config with fewer layers than the tensors" "unexpected tensor" "$SSM" generate --model "$dir/bad" -n 4
bad; printf '{"hidden_size": 16,' >"$dir/bad/config.json"
expect_error "invalid config JSON" "config.json" "$SSM" info --model "$dir/bad"
bad; rm "$dir/bad/config.json"
expect_error "missing config.json" "config.json" "$SSM" info --model "$dir/bad"
bad; sed -i 's/"hidden_size": 16/"hidden_size": 65536/; s/"intermediate_size": 32/"intermediate_size": 131072/; s/"num_hidden_layers": 2/"num_hidden_layers": 4096/' "$dir/bad/config.json"
expect_error "an enormous config.json is a shape error, before allocating" "config.json implies" "$SSM" info --model "$dir/bad"
bad; size=$(stat -c %s "$st"); printf '\x00\x00\xc0\x7f' | dd of="$st" bs=1 seek=$((size - 4)) conv=notrunc status=none
expect_error "NaN weights" "non-finite" "$SSM" generate --model "$dir/bad" -n 4
expect_error "missing model directory" "no such model directory" "$SSM" info --model "$dir/nowhere"

# --- Hugging Face model directories (tests/fixtures/hf) ---
hf=tests/fixtures/hf/models
if out=$("$SSM" generate --model "$hf/tied_f32" --prompt "the state" -n 12 --temperature 0 2>"$dir/err") &&
    [ "${out#the state}" != "$out" ]; then
    ok "generate with the tokenizer.json beside the model"
else
    fail "generate with the tokenizer.json beside the model: $(cat "$dir/err")"
fi
if "$SSM" eval --model "$hf/tied_f32" --data "$dir/text.txt" --quiet | grep -Eq '^loss [0-9.]+ nats/token, [0-9.]+ bits/byte \([0-9]+ tokens, [0-9]+ bytes\)$'; then
    ok "eval with a tokenizer reports nats/token and bits/byte"
else
    fail "eval with a tokenizer reports nats/token and bits/byte"
fi
rm -rf "$dir/shards" && cp -r "$hf/sharded_bias" "$dir/shards" && rm "$dir/shards/model-00002-of-00003.safetensors"
expect_error "index naming a missing shard" "model-00002-of-00003.safetensors" "$SSM" info --model "$dir/shards"
rm -rf "$dir/shards" && cp -r "$hf/sharded_bias" "$dir/shards" && printf '{"weight_map": ' >"$dir/shards/model.safetensors.index.json"
expect_error "invalid index JSON" "model.safetensors.index.json" "$SSM" info --model "$dir/shards"
rm -rf "$dir/tok" && cp -r "$hf/tied_f32" "$dir/tok"
python3 - "$dir/tok/tokenizer.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
t["model"]["merges"].append("zzzz qqqq" if isinstance(t["model"]["merges"][0], str) else ["zzzz", "qqqq"])
json.dump(t, open(sys.argv[1], "w"))
PY
expect_error "tokenizer with a merge naming an unknown token" "tokenizer.json" "$SSM" generate --model "$dir/tok" --prompt hi -n 2
expect_error "a prompt the model's vocabulary cannot hold" "outside the model's vocabulary" \
    "$SSM" generate --model "$dir/run" --tokenizer "$hf/tied_f32/tokenizer.json" --prompt "the state" -n 2

# --- the happy paths ---
if "$SSM" eval --model "$dir/run" --data "$dir/text.txt" | grep -Eq '^loss [0-9.]+ nats/byte, [0-9.]+ bits/byte$'; then
    ok "eval prints nats and bits per byte"
else
    fail "eval prints nats and bits per byte"
fi
a=$("$SSM" generate --model "$dir/run" --prompt "the " -n 40 --temperature 0)
b=$("$SSM" generate --model "$dir/run" --prompt "the " -n 40 --temperature 0)
if [ "$a" = "$b" ] && [ ${#a} -ge 40 ]; then ok "greedy generation is deterministic"; else fail "greedy generation is deterministic"; fi
a=$("$SSM" generate --model "$dir/run" --prompt "the " -n 40 --seed 3 --top-k 5)
b=$("$SSM" generate --model "$dir/run" --prompt "the " -n 40 --seed 3 --top-k 5)
if [ "$a" = "$b" ]; then ok "seeded sampling is reproducible"; else fail "seeded sampling is reproducible"; fi
if "$SSM" info --model "$dir/run" | grep -q "inference state per sequence"; then ok "info"; else fail "info"; fi
# the state by kind at 1K .. 1M positions and at --context: a Mamba model's is the same at every context
"$SSM" info --config d256x4 --context 3000 >"$dir/info"
check "info: the state table has a --context column" grep -qE "^  kind +layers +1K +8K +64K +1M +3000$" "$dir/info"
check "info: a Mamba state is the same at every context" \
    awk '/^  total/ { for (i = 5; i <= NF; i += 2) if ($i != $3 || $(i + 1) != $4) exit 1; found = 1 } END { exit !found }' "$dir/info"
expect_error "info --context -1" "--context must be" "$SSM" info --config d256x4 --context -1
# decode after a prefill of a given context: one row per length, with the state it holds
"$SSM" bench --config d256x4 --what decode --decode-steps 2 --decode-batch 2 --contexts 1K,1500 --threads 1 >"$dir/bench"
check "bench --contexts: a decode row per context" \
    sh -c "grep -q '^decode batch 1 at 1K .*state' '$dir/bench' && grep -q '^decode batch 1 at 1500 ' '$dir/bench'"
expect_error "bench --contexts with a bad length" "--contexts: expected" "$SSM" bench --what decode --contexts 1K,x
expect_error "bench --no-prefill without --contexts" "add --contexts" "$SSM" bench --what decode --no-prefill
"$SSM" bench --config d256x4 --what train --batch 2 --seq-len 32 --steps 1 --profile --threads 1 >"$dir/bench_prof"
check "bench --profile: a row per op, the GEMMs' TFLOP/s, the totals by kind" \
    sh -c "grep -Eq '^matmul_xwT +[0-9.]+ +[0-9.]+ +[0-9.]+% +[0-9]+\.[0-9]+$' '$dir/bench_prof' &&
           grep -Eq '^scan_fwd +[0-9.]+ +[0-9.]+ +[0-9.]+% *$' '$dir/bench_prof' && grep -q '^by kind: gemm' '$dir/bench_prof'"
"$SSM" bench --config d256x4 --what decode --decode-steps 2 --decode-batch 3 --prefill 300 --prefill-chunk 128 \
    --threads 1 >"$dir/bench_prefill"
check "bench --prefill: rows at batch 1 and the decode batch, per byte" \
    sh -c "grep -q '^prefill 1 x 300 .*us/byte' '$dir/bench_prefill' && grep -q '^prefill 3 x 300 ' '$dir/bench_prefill'"
expect_error "bench --prefill with a bad length" "--prefill: expected" "$SSM" bench --what decode --prefill 2x
# a byte-level model's output is exactly the prompt and the generated bytes (no newline it did not make)
"$SSM" generate --model "$dir/run" --prompt "the " -n 40 --seed 5 >"$dir/gen"
check "generate writes exactly the prompt + n bytes to a pipe" [ "$(stat -c %s "$dir/gen")" -eq 44 ]
check "generate's output starts with the prompt" [ "$(head -c 4 "$dir/gen")" = "the " ]
"$SSM" generate --model "$dir/run" --prompt "the " -n 40 --seed 5 --no-echo >"$dir/gen2"
check "generate --no-echo writes the generated bytes alone" cmp -s <(tail -c 40 "$dir/gen") "$dir/gen2"


# the default data path comes from SSM_DATA_DIR (tests/run_tests.sh sets it; CI has ../shared/data)
if [ -f "${SSM_DATA_DIR:-data}/tinyshakespeare.txt" ]; then
    if "$SSM" train --out "$dir/shakespeare" --d-model 16 --n-layer 1 --batch 2 --seq-len 32 --steps 2 \
        --eval-every 2 --eval-bytes 4096 --sample 20 --prompt "ROMEO:" >"$dir/out" 2>"$dir/err" &&
        grep -q "^ROMEO:" "$dir/out"; then
        ok "train on \$SSM_DATA_DIR/tinyshakespeare.txt by default, then sample"
    else
        fail "train on \$SSM_DATA_DIR/tinyshakespeare.txt by default: $(tail -2 "$dir/err")"
    fi
else
    echo "skip - no tinyshakespeare.txt in ${SSM_DATA_DIR:-data} (make data downloads it)"
fi

# --- attention and MLP layers ('a', 'f') ---
if "$SSM" train --data "$dir/text.txt" --out "$dir/arun" "${tiny[@]}" --layers maf --n-layer 3 --n-heads 4 \
    --n-kv-heads 2 2>"$dir/err"; then
    ok "train a hybrid model (--layers maf, grouped-query attention)"
else
    fail "train a hybrid model (--layers maf): $(cat "$dir/err")"
fi
if "$SSM" train --data "$dir/text.txt" --out "$dir/trun" "${tiny[@]}" --layers af 2>"$dir/err"; then
    ok "train a Transformer (--layers af)"
else
    fail "train a Transformer (--layers af): $(cat "$dir/err")"
fi
out=$("$SSM" generate --model "$dir/trun/checkpoint" --prompt "ab" -n 40 --seed 3 2>"$dir/err")
[ $? -eq 0 ] && [ "${#out}" -ge 40 ] && ok "generate from a Transformer (prompt + 40 bytes)" ||
    fail "generate from a Transformer: ${#out} bytes: $(cat "$dir/err")"
if "$SSM" eval --model "$dir/trun/checkpoint" --data "$dir/text.txt" --chunk 16 >"$dir/out" 2>"$dir/err" &&
    grep -q "bits/byte" "$dir/out"; then
    ok "eval a Transformer (a cache of one chunk)"
else
    fail "eval a Transformer: $(cat "$dir/out" "$dir/err")"
fi
# --window N: attention reads each chunk alone already, so windows of the chunk are what it printed without them
if "$SSM" eval --model "$dir/trun/checkpoint" --data "$dir/text.txt" --chunk 16 --window 16 >"$dir/out2" 2>"$dir/err" &&
    cmp -s "$dir/out" "$dir/out2"; then
    ok "eval --window 16 of a Transformer read in chunks of 16 prints the same loss"
else
    fail "eval --window of a Transformer: $(cat "$dir/out" "$dir/out2" "$dir/err")"
fi
# --stride S: windows that overlap give the bytes past the first window more context (another loss); S = N: the same
if "$SSM" eval --model "$dir/trun/checkpoint" --data "$dir/text.txt" --chunk 16 --window 16 --stride 16 >"$dir/out3" \
    2>"$dir/err" && cmp -s "$dir/out" "$dir/out3" &&
    "$SSM" eval --model "$dir/trun/checkpoint" --data "$dir/text.txt" --chunk 16 --window 16 --stride 4 >"$dir/out3" \
        2>"$dir/err" && grep -q "bits/byte" "$dir/out3" && ! cmp -s "$dir/out" "$dir/out3"; then
    ok "eval --window 16 --stride 4 of a Transformer: another loss; --stride 16 the same as --window 16"
else
    fail "eval --stride of a Transformer: $(cat "$dir/out" "$dir/out3" "$dir/err")"
fi
expect_error "eval --stride without --window" "--stride S takes --window N" \
    "$SSM" eval --model "$dir/trun/checkpoint" --data "$dir/text.txt" --stride 4
expect_error "eval --stride past --window" "--stride must be between 1 and --window" \
    "$SSM" eval --model "$dir/trun/checkpoint" --data "$dir/text.txt" --window 8 --stride 9
# SSM_EVAL_TRAIN_FORWARD=1 (a diagnostic): the windows scored by the training forward, batched, give the scoring
# forward's loss (the training forward and the forward with a state are one model)
for m in "$model" "$dir/trun/checkpoint"; do
    a=$("$SSM" eval --model "$m" --data "$dir/text.txt" --chunk 16 --window 16 2>"$dir/err" | awk '{print $4}')
    b=$(SSM_EVAL_TRAIN_FORWARD=1 "$SSM" eval --model "$m" --data "$dir/text.txt" --chunk 16 --window 16 2>>"$dir/err" |
        awk '{print $4}')
    if [ -n "$a" ] && [ -n "$b" ] && grep -q "windows of 16 scored by the training forward" "$dir/err" &&
        awk -v a="$a" -v b="$b" 'BEGIN { d = a - b; exit !(d < 1e-5 && d > -1e-5) }'; then
        ok "eval --window 16 through the training forward (SSM_EVAL_TRAIN_FORWARD=1) = the scoring forward ($m)"
    else
        fail "eval through the training forward ($m): '$a' vs '$b': $(cat "$dir/err")"
    fi
done
expect_error "eval --window with --task" "--window is for a --data file" \
    "$SSM" eval --model "$dir/trun/checkpoint" --task "mqar:seq=64,pairs=4" --window 16
expect_error "eval --window -1" "--window must be 0 (none) or a number of tokens" \
    "$SSM" eval --model "$dir/trun/checkpoint" --data "$dir/text.txt" --window -1
# the formats: a hybrid in our config, a Transformer as HF Llama; each with its shape, used by generate and info
check "a hybrid saves our ssm_hybrid config with its attention shape" \
    sh -c "grep -q '\"model_type\": \"ssm_hybrid\"' '$dir/arun/checkpoint/config.json' &&
           grep -q '\"num_key_value_heads\": 2' '$dir/arun/checkpoint/config.json'"
check "a Transformer saves as LlamaForCausalLM" grep -q '"LlamaForCausalLM"' "$dir/trun/checkpoint/config.json"
out=$("$SSM" generate --model "$dir/arun/checkpoint" --prompt "ab" -n 20 --seed 3 2>"$dir/err")
[ $? -eq 0 ] && [ "${#out}" -ge 20 ] && grep -q "attention .*growing" "$dir/err" &&
    ok "generate from the hybrid, reporting its growing attention state" ||
    fail "generate from the hybrid: ${#out} bytes: $(cat "$dir/err")"
"$SSM" info --model "$dir/arun" >"$dir/info"
check "info: an attention state grows with the context" \
    awk '/^  attention/ { found = 1; if ($3 " " $4 == $5 " " $6) exit 1 } END { exit !found }' "$dir/info"
ta=("$SSM" train --data "$dir/text.txt" --out "$dir/aerr" "${tiny[@]}" --layers af)
expect_error "--n-kv-heads not dividing --n-heads" "n_kv_heads 3 does not divide n_heads 4" "${ta[@]}" --n-heads 4 \
    --n-kv-heads 3
expect_error "an odd head_dim" "head_dim 3 is odd" "${ta[@]}" --n-heads 4 --head-dim 3
expect_error "--n-heads not dividing d_model" "n_heads 5 does not divide d_model 16" "${ta[@]}" --n-heads 5
expect_error "an unknown layer letter" "unknown layer 'x'" "${ta[@]}" --layers afx
[ -e "$dir/aerr" ] && fail "a refused attention config left a run directory" || ok "refused attention configs leave no run"

# --- Mamba-2 layers ('M') ---
m2=(--layers M --m2-d-state 8 --m2-head-dim 8 --m2-groups 2 --chunk-size 16)
if "$SSM" train --data "$dir/text.txt" --out "$dir/m2run" "${tiny[@]}" "${m2[@]}" 2>"$dir/err"; then
    ok "train a Mamba-2 model (--layers M, 4 heads in 2 groups, chunks of 16)"
else
    fail "train a Mamba-2 model: $(cat "$dir/err")"
fi
check "a Mamba-2 model saves as Mamba2ForCausalLM, time_step_limit as transformers writes it" \
    sh -c "grep -q '\"Mamba2ForCausalLM\"' '$dir/m2run/checkpoint/config.json' &&
           grep -q '\"time_step_limit\": \[0.0, Infinity\]' '$dir/m2run/checkpoint/config.json'"
out=$("$SSM" generate --model "$dir/m2run/checkpoint" --prompt "ab" -n 40 --seed 3 2>"$dir/err")
[ $? -eq 0 ] && [ "${#out}" -ge 40 ] && ok "generate from a Mamba-2 model (prompt + 40 bytes)" ||
    fail "generate from a Mamba-2 model: ${#out} bytes: $(cat "$dir/err")"
if "$SSM" eval --model "$dir/m2run/checkpoint" --data "$dir/text.txt" --chunk 20 >"$dir/out" 2>"$dir/err" &&
    grep -q "bits/byte" "$dir/out"; then
    ok "eval a Mamba-2 model (the state carried across chunks)"
else
    fail "eval a Mamba-2 model: $(cat "$dir/out" "$dir/err")"
fi
"$SSM" info --model "$dir/m2run" >"$dir/info"
check "info: the Mamba-2 shape and its fixed state" grep -q "mamba2: d_inner 32, 4 heads of 8, 2 groups" "$dir/info"
check "info --config m2x24: mamba2-130m's shape, 90.6M parameters" \
    sh -c "'$SSM' info --config m2x24 | grep -q 'parameters: 90565056'"
tm=("$SSM" train --data "$dir/text.txt" --out "$dir/m2err" "${tiny[@]}" --layers mM)
expect_error "--m2-head-dim not dividing d_inner" "head_dim 5 does not divide d_inner 32" "${tm[@]}" --m2-head-dim 5
tm+=(--m2-head-dim 16)
expect_error "--m2-groups not dividing the heads" "n_groups 3 does not divide the 2 heads" "${tm[@]}" --m2-groups 3
expect_error "--chunk-size not a power of two" "chunk_size 24 is not a power of two" "${tm[@]}" --chunk-size 24
expect_error "--chunk-size 0" "chunk_size 0 is not a power of two" "${tm[@]}" --chunk-size 0
[ -e "$dir/m2err" ] && fail "a refused Mamba-2 config left a run directory" || ok "refused Mamba-2 configs leave no run"

# --- int8 decode weights (CPU) ---
a=$("$SSM" generate --model "$model" --prompt "the " -n 30 --temperature 0 2>/dev/null)
b=$("$SSM" generate --model "$model" --prompt "the " -n 30 --temperature 0 --int8 2>/dev/null)
[ ${#b} -eq ${#a} ] && ok "generate --int8 (greedy, the same length)" || fail "generate --int8: '$b'"
if "$SSM" eval --model "$model" --data "$dir/text.txt" --int8 --quiet >"$dir/out" && grep -q "bits/byte" "$dir/out"; then
    ok "eval --int8"
else
    fail "eval --int8: $(cat "$dir/out")"
fi
expect_error "--int8 with --bf16" "choose one" "$SSM" generate --model "$model" -n 4 --int8 --bf16
expect_error "eval --int8 on cuda" "eval --int8 scores on the CPU" \
    "$SSM" eval --model "$model" --data "$dir/text.txt" --int8 --device cuda
expect_error "bench --int8 asks for --what decode" "add --what decode" "$SSM" bench --int8

# --- devices ---
expect_error "an unknown --device" "unknown device 'tpu'" "$SSM" eval --model "$model" --data "$dir/text.txt" --device tpu
expect_error "--bf16 training on the CPU" "--bf16 training needs --device cuda" \
    "$SSM" train --data "$dir/text.txt" --out "$dir/bf16run" "${tiny[@]}" --bf16
# cuda:N: a malformed name is one line before anything else is looked at (this machine's GPUs, the build)
expect_error "--device cuda:x" "unknown device 'cuda:x'" "$SSM" eval --model "$model" --data "$dir/text.txt" --device cuda:x
expect_error "--device cuda:-1" "unknown device 'cuda:-1'" "$SSM" generate --model "$model" -n 4 --device cuda:-1
if "$SSM" generate --help | grep -q "cuda:N"; then ok "--help names cuda:N"; else fail "--help names cuda:N"; fi
# a GPU for this binary: one is present and the build has CUDA (a CPU-only build, such as make
# check-sanitize's build/asan/ssm, must answer --device cuda as on a machine without a GPU)
gpu=0
if nvidia-smi -L >/dev/null 2>&1 && ! "$SSM" info --config default 2>&1 | grep -q "built without CUDA"; then gpu=1; fi
if [ $gpu -eq 0 ]; then # no GPU here (CI): --device cuda must say so in one line
    expect_error "--device cuda without a GPU (or without CUDA in the build)" "use --device cpu" \
        "$SSM" generate --model "$model" --prompt "the" -n 4 --device cuda
    expect_error "--device cuda:7 parses, then finds no GPU" "use --device cpu" \
        "$SSM" generate --model "$model" --prompt "the" -n 4 --device cuda:7
    expect_error "--device cuda with an attention layer" "use --device cpu" \
        "$SSM" generate --model "$dir/trun/checkpoint" --prompt "the" -n 4 --device cuda
    [ -d "$dir/bf16run" ] && fail "a failed run left a run directory" || true
fi
# --gpus N (several GPUs, docs/distributed.md): its argument checks, whatever the machine; on one without GPUs or NCCL,
# one line saying so, nothing started and no run directory left behind
expect_error "--gpus 0" "--gpus must be at least 1" "$SSM" train "${tiny[@]}" --gpus 0 --out "$dir/gpus0"
expect_error "--gpus with --device cpu" "drop --device cpu" \
    "$SSM" train "${tiny[@]}" --gpus 2 --device cpu --out "$dir/gpuscpu"
expect_error "--gpus under mpirun" "drop it under mpirun" env OMPI_COMM_WORLD_SIZE=1 \
    "$SSM" train "${tiny[@]}" --gpus 2 --out "$dir/gpusmpi"
if ! ldd "$SSM" 2>/dev/null | grep -q libnccl; then
    expect_error "--gpus 2 in a build without NCCL" "built without NCCL" \
        "$SSM" train "${tiny[@]}" --gpus 2 --out "$dir/gpus2"
elif [ $gpu -eq 0 ]; then
    expect_error "--gpus 2 on a machine without GPUs names the count" "than this machine has (0)" \
        "$SSM" train "${tiny[@]}" --gpus 2 --out "$dir/gpus2"
fi
[ -e "$dir/gpus2" ] || [ -e "$dir/gpus0" ] || [ -e "$dir/gpuscpu" ] && fail "a refused --gpus left a run directory" ||
    ok "a refused --gpus leaves no run directory"
"$SSM" train --help 2>&1 | grep -q -- "--gpus" && ok "train --help names --gpus" || fail "train --help names --gpus"
# on a GPU: out of GPU memory is one line naming the fix (tests/gpu/run.sh runs this file there too)
if [ $gpu -eq 1 ]; then
    # attention's CUDA kernels: a Transformer generates on the GPU
    out=$("$SSM" generate --model "$dir/trun/checkpoint" --prompt "the" -n 20 --seed 3 --device cuda 2>"$dir/err")
    [ $? -eq 0 ] && [ "${#out}" -ge 20 ] && ok "generate from a Transformer on the GPU" ||
        fail "generate from a Transformer on the GPU: ${#out} bytes: $(cat "$dir/err")"
    expect_error "--device cuda:99: no such GPU, and how many there are" "this machine has" \
        "$SSM" generate --model "$model" --prompt "the" -n 4 --device cuda:99
    expect_error "out of GPU memory" "out of GPU memory" \
        "$SSM" train --data "$dir/text.txt" --out "$dir/oom" --d-model 1024 --n-layer 4 --batch 100000 --seq-len 1024 \
        --steps 1 --sample 0 --quiet --device cuda
fi

exit $((fails > 0))
