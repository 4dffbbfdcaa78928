# Sourced by the command-line tests (tests/test_cli*.sh): a scratch directory, ok/fail lines, expect_error,
# a tiny data set ($dir/text.txt) and tiny training options (${tiny[@]}).
#   SSM           the binary to test (default build/ssm; make check-sanitize passes build/asan/ssm)
#   SSM_CLI_TAG   a word put before every test name ("ok - asan: ..."), to tell two runs apart in one log
set -u
SSM=${SSM:-build/ssm}
tag=${SSM_CLI_TAG:+$SSM_CLI_TAG: }
dir=$(mktemp -d /tmp/ssm_cli.XXXXXX)
trap 'rm -rf "$dir"' EXIT
fails=0

ok() { echo "ok - $tag$1"; }
fail() { echo "FAIL - $tag$1"; fails=$((fails + 1)); }
# check NAME CMD...: ok when CMD succeeds
check() {
    local name=$1
    shift
    if "$@"; then ok "$name"; else fail "$name"; fi
}

# expect_error NAME SUBSTRING CMD...: non-zero exit, exactly one stderr line containing SUBSTRING.
# A user error ends the process with exit(1) while it still holds what it allocated; whether
# LeakSanitizer (in an ASan build) can still see those pointers depends on the compiler's register
# use, so these runs are checked for memory errors but not for leaks. The commands that succeed are.
expect_error() {
    local name=$1 want=$2
    shift 2
    ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 "$@" >"$dir/out" 2>"$dir/err"
    local rc=$? lines
    lines=$(wc -l <"$dir/err")
    if [ $rc -ne 0 ] && [ "$lines" -eq 1 ] && grep -qF -- "$want" "$dir/err"; then
        ok "$name"
    else
        fail "$name (exit $rc, $lines stderr lines, wanted '$want'): $(head -c 300 "$dir/err")"
    fi
}

# every line of a metrics.jsonl a whole JSON object (no NaN, no torn line)
valid_jsonl() {
    python3 -c "
import json, sys
for n, line in enumerate(open(sys.argv[1], encoding='utf-8'), 1):
    assert line.endswith('\n'), f'line {n} is torn'
    assert isinstance(json.loads(line, parse_constant=lambda c: sys.exit(f'line {n}: {c}')), dict)" "$1"
}

python3 -c "
import random; random.seed(1)
words = ['the', 'state', 'space', 'model', 'reads', 'bytes', 'and', 'learns']
print(' '.join(random.choice(words) for _ in range(3000)))" >"$dir/text.txt"
tiny=(--d-model 16 --n-layer 2 --d-state 4 --batch 2 --seq-len 32 --steps 4 --warmup 1 --eval-every 2 --sample 0 --quiet)
