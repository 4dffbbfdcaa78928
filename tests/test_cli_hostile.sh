#!/usr/bin/env bash
# Every option of every command, given hostile values (zero, negative, past 32 bits, NaN, infinite, empty,
# not a number): the command may run (a SIGTERM stops it after a few seconds) or refuse in one line, but never
# crash, report an internal error or a sanitizer finding, or leave an invalid metrics.jsonl.
# make check-sanitize runs it on the ASan/UBSan build. Prints one "ok"/"FAIL" line per command.
. "$(dirname "$0")/cli_common.sh"
# the cases run in a scratch directory (a hostile --out is a relative path): the binary by its full path
SSM=$(cd "$(dirname "$SSM")" && pwd)/$(basename "$SSM")
mkdir -p "$dir/cwd"

"$SSM" train --data "$dir/text.txt" --out "$dir/model" "${tiny[@]}" 2>/dev/null || fail "train a tiny model"
values=(0 -1 2147483647 9999999999 1e308 nan inf -inf "" x)
declare -A base=(
    [train]="--data $dir/text.txt --d-model 16 --n-layer 1 --d-state 4 --batch 2 --seq-len 32 --steps 3 --warmup 1 --eval-every 2 --sample 4 --quiet"
    [eval]="--model $dir/model --data $dir/text.txt --quiet"
    [generate]="--model $dir/model --prompt the -n 4 --seed 1"
    [info]="--model $dir/model"
    [bench]="--config d256x4 --batch 2 --seq-len 16 --steps 1 --decode-steps 1 --decode-batch 2"
)
# Memory: a value that asks for more than 6 GB must be refused, not swap the machine. Under ASan (which
# reserves terabytes of address space, so no ulimit -v) its allocator enforces the same limit.
limit_memory() { ulimit -v 6000000; }
if [ -n "${ASAN_OPTIONS:-}" ]; then
    # (leaks are not looked for: most of these cases are user errors, which exit(1) holding memory)
    export ASAN_OPTIONS="$ASAN_OPTIONS:allocator_may_return_null=1:max_allocation_size_mb=6000:detect_leaks=0"
    limit_memory() { :; }
fi
total=0
for cmd in train eval generate info bench; do
    # the options, as --help lists them
    opts=$("$SSM" $cmd --help | sed -n 's/^  \(-[a-z], \)\{0,1\}\(--[a-z0-9-]*\).*/\2/p' | grep -v -- '--help')
    bad=0 n=0
    for opt in $opts; do
        for v in "${values[@]}"; do
            n=$((n + 1))
            out="$dir/hostile_run"
            rm -rf "$out"
            extra=()
            [ "$cmd" = train ] && extra=(--out "$out")
            # shellcheck disable=SC2086 # base[] is a word list
            (
                cd "$dir/cwd" || exit 99
                limit_memory
                timeout -k 2 4 "$SSM" $cmd ${base[$cmd]} "${extra[@]}" "$opt" "$v"
            ) >/dev/null 2>"$dir/err"
            rc=$?
            why=""
            # 124: still running when timeout's SIGTERM came (train saves then, and exits 143 itself)
            case $rc in 0 | 1 | 124 | 143) ;; *) why="exit $rc" ;; esac
            if grep -qE "internal error|AddressSanitizer|runtime error|LeakSanitizer" "$dir/err"; then
                why="$why $(grep -m1 -E "internal error|Sanitizer|runtime error" "$dir/err")"
            fi
            if [ "$rc" -eq 1 ] && [ "$(grep -vc '^note:' "$dir/err")" -gt 3 ]; then why="$why a many-line error"; fi
            if [ -f "$out/metrics.jsonl" ] && ! valid_jsonl "$out/metrics.jsonl" 2>/dev/null; then
                why="$why invalid metrics.jsonl"
            fi
            if [ -n "$why" ]; then
                bad=$((bad + 1))
                echo "  $cmd $opt '$v': $why"
            fi
        done
    done
    total=$((total + n))
    if [ "$bad" -eq 0 ]; then ok "$cmd: $n hostile option values, no crash"; else fail "$cmd: $bad of $n hostile option values"; fi
done
echo "  $total cases"
exit $((fails > 0))
