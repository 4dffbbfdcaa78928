#!/usr/bin/env bash
# The experiments' pipeline (experiments/run.py, docs/experiments.md), so that it cannot rot: every
# experiment's smoke preset (tiny models, seconds, on the CPU) into a scratch directory, its result.json,
# table.md and SVG plots checked (tests/experiments_check.py); an experiment whose ssm options are not in this
# build (--task, --noise-rate) must skip, saying so. Then the full presets' commands built (--dry-run), and
# scripts/get_data.sh on the Linux corpora where $SSM_DATA_DIR holds them (the mirror). Prints ok / FAIL lines.
#   SSM_DATA_DIR   where tinyshakespeare.txt is (and linux-docs.txt.xz, for the get_data.sh checks)
set -u
cd "$(dirname "$0")/.."
dir=$(mktemp -d /tmp/ssm_experiments.XXXXXX)
par="results/.parallel-test-$$"  # in the checkout: the runs' stamps name it relative to the repository
trap 'rm -rf "$dir" "$par"' EXIT
fails=0
ok() { echo "ok - $1"; }
fail() { echo "FAIL - $1"; fails=$((fails + 1)); }
tally() { "$@" || fails=$((fails + 1)); } # a checker prints its own lines; count its failure once more

tally python3 tests/experiments_check.py --unit

total_start=$(date +%s.%N)
for e in bytes noise state hybrid recall; do
    start=$(date +%s.%N)
    if python3 experiments/run.py "$e" --smoke --out "$dir/$e" 2>"$dir/$e.err"; then
        secs=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$start" "$(date +%s.%N)")
        tally python3 tests/experiments_check.py "$dir/$e" "$e" "$secs"
    else
        fail "experiments/run.py $e --smoke: $(tail -3 "$dir/$e.err")"
    fi
done
secs=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$total_start" "$(date +%s.%N)")
echo "   (all smoke presets: $secs s)"

# an experiment split over calls (--runs, --reuse): a call trains the Mamba runs; their weights are dropped (as a
# device call's packed results drop them); the next call trains the rest, reusing the first call's runs and what
# their evaluations printed (cache.json), and the experiment is whole
split="$dir/split"
python3 experiments/run.py bytes --smoke --out "$split" --runs mamba 2>"$dir/split1.err"
s1=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['status'])" "$split/result.json" 2>/dev/null)
find "$split" -name '*.safetensors' -delete
python3 experiments/run.py bytes --smoke --out "$split" --reuse --runs transformer 2>"$dir/split2.err"
if [ "$s1" = partial ] && python3 - "$split/result.json" <<'PY'; then
import json, sys
r = json.load(open(sys.argv[1]))
assert r["status"] == "ok", r["status"]
assert all(row.get("test_bpb") for row in r["rows"]), "a run without its test bits per byte"
assert any(c.get("cached") and " eval " in f" {c['cmd']} " for c in r["commands"]), "no eval read from the cache"
PY
    ok "experiments: bytes split over two calls (--runs, --reuse, the first call's weights gone): status ok"
else
    fail "experiments: bytes split over two calls: first status '$s1'; $(tail -2 "$dir/split2.err")"
fi

# a run trained by an earlier call whose evaluation that call never finished (its time ran out): its weights are gone,
# so the next call that names it in --runs trains it again, the same command, and evaluates it (not a failed eval);
# a call whose --runs leave it out leaves the eval for later (device_parallel.sh's groups would each train it again)
python3 - "$split/cache.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
gone = [k for k in c if " eval " in f" {k} " and "mamba" in k and "--window" in k]
assert gone, "no windowed eval of the Mamba run in cache.json"
json.dump({k: v for k, v in c.items() if k not in gone}, open(sys.argv[1], "w"))
PY
find "$split" -name '*.safetensors' -delete
python3 experiments/run.py bytes --smoke --out "$split" --reuse --runs transformer 2>"$dir/split3a.err"
s3=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['status'])" "$split/result.json" 2>/dev/null)
if [ "$s3" = partial ] && grep -q "left for a call whose --runs names it" "$dir/split3a.err" &&
    ! grep -q "training it again" "$dir/split3a.err"; then
    ok "experiments: a reused run whose eval never ran, weights gone, left out by --runs: not trained, status partial"
else
    fail "experiments: a reused run left out by --runs: status '$s3'; $(tail -2 "$dir/split3a.err")"
fi
python3 experiments/run.py bytes --smoke --out "$split" --reuse --runs mamba 2>"$dir/split3.err"
if grep -q "training it again" "$dir/split3.err" && python3 - "$split/result.json" <<'PY'; then
import json, sys
r = json.load(open(sys.argv[1]))
assert r["status"] == "ok", r["status"]
assert all(row.get("test_bpb") for row in r["rows"]), "a run without its test bits per byte"
PY
    ok "experiments: a reused run whose eval never ran, weights gone, is trained again and scored"
else
    fail "experiments: a reused run whose eval never ran: $(tail -2 "$dir/split3.err")"
fi

# --from-cache (the calls ran out): the state smoke run's cache.json less one bench, and one bench kept as a timeout,
# written here with a GPU named and nothing run: status partial, the dropped point not run yet, the timeout shown
# and the contexts after it not run
fc="$dir/fromcache"
cp -r "$dir/state" "$fc" && rm -f "$fc/result.json" "$fc/table.md"
if python3 - "$fc/cache.json" "$dir/state" "$fc" <<'PY' && python3 experiments/run.py state --smoke --from-cache --device cuda \
    --out "$fc" >"$dir/fc.out" 2>"$dir/fc.err" && python3 - "$fc/result.json" <<'PY2'; then
import json, shlex, sys
old = json.load(open(sys.argv[1]))
c = {k.replace(sys.argv[2], sys.argv[3]): v for k, v in old.items()}  # the copy's paths
benches = [k for k in c if k.startswith("ssm bench") and "--device cpu" in k]
assert len(benches) >= 4, benches
for k in benches:  # the cache as a GPU run would have left it
    c[k.replace("--device cpu", "--device cuda")] = c.pop(k)
gpu = sorted(k for k in c if k.startswith("ssm bench"))
del c[gpu[0]]  # one model's first context: never measured
second = [k for k in gpu if k.split()[3] != gpu[0].split()[3]][0]  # another model's first: a timeout
del c[second]
c[shlex.join(shlex.split(second) + ["(timeout 120 s)"])] = {"error": "timeout after 120 s"}
# peak memory: a sample below the state it held is a miss, not a number; ssm's own peak, where printed, wins
rest = [k for k in gpu if k in c and k.split()[3] != second.split()[3]]  # (the timeout's model: not run after)
c[rest[0]].update(gpu_memory_bytes=1024)
c[rest[1]].update(gpu_memory_bytes=1024, device_peak_bytes=7 * 2**30)
json.dump(c, open(sys.argv[1], "w"))
PY
import json, sys
r = json.load(open(sys.argv[1]))
assert r["status"] == "partial" and "not run yet" in r["reason"], (r["status"], r["reason"])
assert not [c for c in r["commands"] if not c.get("cached")], "--from-cache ran a command"
skipped = [row.get("skipped", "") for row in r["rows"]]
assert "not run yet" in skipped, skipped
assert any(row.get("error") == "timeout after 120 s" for row in r["rows"]), "the cached timeout is not in the rows"
assert any(s.startswith("not run: timeout") for s in skipped), "a context after the timeout was run"
table = open(sys.argv[1].replace("result.json", "table.md")).read()
assert "missed (a sample: 1.0 KiB)" in table and "| 7.0 GiB |" in table, "peak memory: a missed sample shown as a number"
PY2
    ok "experiments: state --from-cache writes the partial result of the calls' cache, running nothing"
else
    fail "experiments: state --from-cache: $(tail -3 "$dir/fc.err")"
fi

# experiments/device_parallel.sh: two groups of recall's runs at once, each in its own copy of the checkout, packed
# into one parts.tar; merged here (merge_results.py), the result written from the cache is whole, running nothing
RESULTS=$par OUT="$dir/parout" SSM=build/ssm experiments/device_parallel.sh recall 'mqar' 'selcopy|induction' \
    -- --smoke >"$dir/par.out" 2>&1
mkdir -p "$dir/parts" && tar xf "$dir/parout/parts.tar" -C "$dir/parts" 2>>"$dir/par.out"
if experiments/merge_results.py "$par" "$dir"/parts/part*/"$(basename "$par")".tar.xz >>"$dir/par.out" 2>&1 &&
    python3 experiments/run.py recall --smoke --from-cache --out "$par" >>"$dir/par.out" 2>&1 &&
    python3 - "$par/result.json" <<'PY'; then
import json, sys
r = json.load(open(sys.argv[1]))
assert r["status"] == "ok", (r["status"], r.get("reason"))
assert r["commands"] and all(c.get("cached") or c.get("reused") for c in r["commands"]), "a command ran"
assert all(row.get("accuracy") is not None or row.get("accuracy_by_length") for row in r["rows"]), "a run unscored"
PY
    ok "experiments/device_parallel.sh: two groups at once, merged: recall whole from the cache"
else
    fail "experiments/device_parallel.sh: $(tail -3 "$dir/par.out")"
fi

# --earlier: the results folder loses the second group's runs (left on another machine); beside the whole result of
# before, the rows of the runs it lacks come from that result (marked earlier) and its own (the first group's) stay
cp "$par/result.json" "$dir/earlier.json" && rm -rf "$par"
if experiments/merge_results.py "$par" "$dir"/parts/part0/"$(basename "$par")".tar.xz >"$dir/half.out" 2>&1 &&
    python3 experiments/run.py recall --smoke --from-cache --out "$par" --earlier "$dir/earlier.json" \
        >>"$dir/half.out" 2>&1 &&
    ! python3 experiments/run.py recall --from-cache --out "$par" --earlier "$dir/earlier.json" \
        >>"$dir/half.out" 2>&1 && grep -q "not of recall (full)" "$dir/half.out" &&
    ! python3 experiments/run.py recall --smoke --from-cache --out "$dir/none" --earlier "$dir/no-such.json" \
        >>"$dir/half.out" 2>&1 && grep -q "^--earlier $dir/no-such.json: .*No such file" "$dir/half.out" &&
    [ ! -e "$dir/none" ] &&
    python3 - "$par/result.json" "$dir/earlier.json" <<'PY'; then
import json, sys
r, old = (json.load(open(f)) for f in sys.argv[1:3])
assert r["status"] == "ok", (r["status"], r.get("reason"))
mine = {x["name"]: x for x in r["rows"]}
assert set(mine) == {x["name"] for x in old["rows"]}, "rows lost or added"
for name, row in mine.items():
    assert bool(row.get("earlier")) == (not name.startswith("mqar")), (name, row.get("earlier"))
assert len(r["commands"]) == len(old["commands"]), (len(r["commands"]), len(old["commands"]))
PY
    ok "experiments: --earlier fills the runs a results folder lacks from an earlier result, its own kept"
else
    fail "experiments: --earlier: $(tail -3 "$dir/half.out")"
fi

# a run cut by a call's end: its checkpoint comes back in the pack (small weights), merge_results.py brings it, and
# the next call resumes it where it stopped (the cut made here by --stop-after, as ssm train does at BUDGET's SIGINT);
# one cut after its last step's checkpoint is kept as finished
cut="results/.resume-test-$$"
run="$cut/runs/selcopy-m"
if python3 experiments/run.py recall --smoke --reuse --runs 'selcopy-m$' --out "$cut" >"$dir/cut.out" 2>&1 &&
    cmd=$(cat "$run/experiment_command.txt") && mv "$run/experiment_command.txt" "$run/experiment_started.txt" &&
    eval "build/ssm ${cmd#ssm } --overwrite --stop-after 5" >>"$dir/cut.out" 2>&1 &&
    RESULTS=$cut OUT="$dir/cutout" SSM=build/ssm experiments/device_call.sh recall --smoke --runs 'no-such-run' \
        >>"$dir/cut.out" 2>&1 &&
    tar tJf "$dir/cutout/$(basename "$cut").tar.xz" | grep -q 'selcopy-m/checkpoint/model.safetensors$' &&
    ! tar tJf "$dir/cutout/$(basename "$cut").tar.xz" | grep -q 'mqar.*safetensors' &&
    rm -rf "$cut" && experiments/merge_results.py "$cut" "$dir/cutout/$(basename "$cut").tar.xz" >>"$dir/cut.out" 2>&1 &&
    grep -q 'selcopy-m (cut at step 5' "$dir/cut.out" &&
    python3 experiments/run.py recall --smoke --reuse --runs 'selcopy-m$' --out "$cut" >>"$dir/cut.out" 2>&1 &&
    grep -q 'selcopy-m: resuming at step 5' "$dir/cut.out" && [ -f "$cut/logs/train-selcopy-m-from-5.log" ] &&
    [ "$(cat "$run/experiment_command.txt")" = "$cmd" ] &&
    mv "$run/experiment_command.txt" "$run/experiment_started.txt" &&
    python3 experiments/run.py recall --smoke --reuse --runs 'selcopy-m$' --out "$cut" >>"$dir/cut.out" 2>&1 &&
    grep -q 'selcopy-m: its checkpoint is at the last step (12): kept as finished' "$dir/cut.out" &&
    [ "$(cat "$run/experiment_command.txt")" = "$cmd" ] && [ ! -f "$cut/logs/train-selcopy-m-from-12.log" ] &&
    python3 - "$run/metrics.jsonl" <<'PY'; then
import json, sys
steps = [r["step"] for r in map(json.loads, open(sys.argv[1])) if "loss" in r]
assert steps == list(range(1, 13)), steps
PY
    ok "experiments: a run cut by a call's end comes back with its checkpoint and the next call resumes it"
else
    fail "experiments: resuming a cut run: $(tail -3 "$dir/cut.out")"
fi
rm -rf "$cut"

# the full presets: every command built without running anything (the data need not be here)
if python3 experiments/run.py all --dry-run >"$dir/dry" 2>"$dir/dry.err" &&
    [ "$(grep -c '^build/ssm train' "$dir/dry")" -ge 40 ] && grep -q -- '--device cuda --bf16' "$dir/dry" &&
    grep -q '^build/ssm bench .* --contexts 1048576' "$dir/dry"; then
    ok "experiments/run.py all --dry-run: the full presets' $(grep -c '^build/ssm' "$dir/dry") commands"
else
    fail "experiments/run.py all --dry-run: $(tail -3 "$dir/dry.err")"
fi
if python3 experiments/run.py bytes --smoke --out "$dir/badruns" --runs '[' 2>"$dir/err"; then
    fail "--runs with a bad regular expression is refused"
else
    grep -q "is not a regular expression" "$dir/err" && [ ! -e "$dir/badruns" ] &&
        ok "--runs with a bad regular expression: one line, nothing written" ||
        fail "--runs with a bad regular expression: $(tail -2 "$dir/err")"
fi
if python3 experiments/run.py nosuch --smoke 2>"$dir/err"; then
    fail "an unknown experiment is refused"
else
    grep -q "unknown experiment" "$dir/err" && ok "an unknown experiment is refused, naming the known ones" ||
        fail "an unknown experiment is refused: $(cat "$dir/err")"
fi

# scripts/get_data.sh: the Linux corpora from a mirror, checksummed, split 95/5 (only where the mirror is)
mirror=${SSM_DATA_DIR:-data}
if [ -f "$mirror/linux-docs.txt.xz" ]; then
    if scripts/get_data.sh --mirror "$mirror" "$dir/data" linux-docs >"$dir/gd" 2>&1 &&
        [ "$(wc -c <"$dir/data/linux-docs.txt")" -eq 31498880 ] &&
        [ "$(wc -c <"$dir/data/linux-docs.trainval.txt")" -eq 29923936 ] &&
        [ "$(wc -c <"$dir/data/linux-docs.test.txt")" -eq 1574944 ] &&
        cat "$dir/data/linux-docs.trainval.txt" "$dir/data/linux-docs.test.txt" | cmp -s - "$dir/data/linux-docs.txt"; then
        ok "get_data.sh --mirror: linux-docs checksummed, split into trainval (95%) + test (5%)"
    else
        fail "get_data.sh --mirror linux-docs: $(tail -3 "$dir/gd")"
    fi
    if scripts/get_data.sh "$dir/data" linux-docs 2>&1 | grep -q "present, checksum ok"; then
        ok "get_data.sh: a corpus present with the right checksum is kept (no mirror needed)"
    else
        fail "get_data.sh: a present corpus is kept"
    fi
    mkdir -p "$dir/badmirror"
    head -c 100000 "$mirror/linux-docs.txt.xz" >"$dir/badmirror/linux-docs.txt.xz"
    if ! scripts/get_data.sh --mirror "$dir/badmirror" "$dir/bad" linux-docs >/dev/null 2>"$dir/err" &&
        [ ! -e "$dir/bad/linux-docs.txt" ] && [ ! -e "$dir/bad/linux-docs.txt.part" ]; then
        ok "get_data.sh: a damaged mirror file is refused, nothing kept ($(tail -1 "$dir/err"))"
    else
        fail "get_data.sh: a damaged mirror file is refused"
    fi
    if ! env -u SSM_DATA_MIRROR scripts/get_data.sh "$dir/nomirror" linux-kmf >/dev/null 2>"$dir/err" &&
        grep -q -- "--mirror" "$dir/err"; then
        ok "get_data.sh: a Linux corpus without a mirror is a one-line error naming --mirror"
    else
        fail "get_data.sh: a Linux corpus without a mirror: $(cat "$dir/err")"
    fi
else
    echo "skip - get_data.sh checks: no $mirror/linux-docs.txt.xz (set SSM_DATA_DIR to the data mirror)"
fi
exit $((fails > 0))
