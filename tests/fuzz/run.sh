#!/usr/bin/env bash
# Runs every libFuzzer harness (tests/fuzz/fuzz_*.c, built by `make fuzz`) for SECONDS each, on a copy
# of its seed corpus tests/fuzz/corpus_<name>/ (with tests/fuzz/<name>.dict when there is one), and
# prints one line per harness in run_tests.sh's format:
#   ok - fuzz <name> (<N> runs, SECONDS s) | FAIL - fuzz <name>: <first line of the crash> | skip - ...
# A crashing input is kept in build/fuzz/crashes/; reproduce with build/fuzz/fuzz_<name> <that file>.
#   tests/fuzz/run.sh [SECONDS]    (default 20; 0 skips)
set -u
cd "$(dirname "$0")/../.."
seconds=${1:-20}
case "$seconds" in '' | *[!0-9]*) echo "usage: tests/fuzz/run.sh SECONDS" >&2; exit 2 ;; esac
if [ "$seconds" -eq 0 ]; then
    echo "skip - fuzz: 0 seconds requested (SSM_FUZZ_SECONDS=0)"
    exit 0
fi
if ! command -v "${FUZZ_CC:-clang}" >/dev/null 2>&1; then
    echo "skip - fuzz: ${FUZZ_CC:-clang} not found (apt-get install clang libclang-rt-dev)"
    exit 0
fi

work=$(mktemp -d /tmp/ssm_fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT

# libFuzzer's runtime is a separate Debian package (libclang-rt-*-dev), only recommended by clang.
printf '#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { return 0; }\n' >"$work/probe.c"
if ! "${FUZZ_CC:-clang}" -fsanitize=fuzzer,address,undefined "$work/probe.c" -o "$work/probe" >"$work/probe.log" 2>&1; then
    echo "skip - fuzz: ${FUZZ_CC:-clang} cannot link -fsanitize=fuzzer ($(head -n 1 "$work/probe.log")); apt-get install libclang-rt-dev"
    exit 0
fi

# fuzz_checkpoint links the model, which uses OpenMP: clang's runtime for it is libomp (libomp-dev).
printf '#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n' >"$work/omp.c"
omp=1
if ! "${FUZZ_CC:-clang}" -fopenmp "$work/omp.c" -o "$work/omp" >"$work/omp.log" 2>&1; then
    echo "skip - fuzz checkpoint: ${FUZZ_CC:-clang} cannot build with -fopenmp ($(head -n 1 "$work/omp.log")); apt-get install libomp-dev"
    omp=0
fi
names=() bins=()
for src in tests/fuzz/fuzz_*.c; do
    [ -e "$src" ] || continue
    name=$(basename "$src" .c)
    name=${name#fuzz_}
    if [ "$name" = checkpoint ] && [ "$omp" -eq 0 ]; then continue; fi
    names+=("$name")
    bins+=("build/fuzz/fuzz_$name")
done
[ ${#bins[@]} -gt 0 ] || exit 0

if ! make -s "${bins[@]}" >"$work/build.log" 2>&1; then
    echo "FAIL - fuzz: make fuzz failed: $(grep -m 1 -E 'error|Error' "$work/build.log" || head -n 1 "$work/build.log")"
    sed 's/^/  /' "$work/build.log" | tail -n 20
    exit 1
fi

status=0
for name in "${names[@]}"; do
    bin=build/fuzz/fuzz_$name
    corpus=$work/corpus_$name
    mkdir -p "$corpus" "$work/artifacts_$name"
    if [ -d "tests/fuzz/corpus_$name" ]; then cp -R "tests/fuzz/corpus_$name/." "$corpus/"; fi
    args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
          -artifact_prefix="$work/artifacts_$name/")
    if [ -f "tests/fuzz/$name.dict" ]; then args+=(-dict="tests/fuzz/$name.dict"); fi
    log=$work/$name.log
    # The sanitizers' reports end the run with a nonzero status; UBSan is already fatal at build time.
    # A harness may write seeds made at run time into SSM_FUZZ_SEED_DIR (fuzz_checkpoint writes the files
    # of the checkpoint it saves, so they follow today's formats), and its temporary files go in $work.
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1} \
        SSM_FUZZ_SEED_DIR="$corpus" TMPDIR="$work" "$bin" "${args[@]}" "$corpus" >"$log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    if [ "$rc" -eq 0 ]; then
        echo "ok - fuzz $name (${runs:-?} runs, $seconds s)"
        continue
    fi
    status=1
    # The most telling line: UBSan's or our CHECK's message, ASan's one-line SUMMARY (kind, file:line,
    # function), else the first error line.
    first=""
    for pattern in 'runtime error:' '^ssm: internal error' '^written JSON|^round trip' '^SUMMARY: ' 'ERROR:'; do
        [ -n "$first" ] || first=$(grep -m 1 -E "$pattern" "$log")
    done
    [ -n "$first" ] || first=$(grep -m 1 -v -E '^(INFO|#[0-9])' "$log")
    report_start=$(grep -m 1 -n -E 'runtime error:|^ssm: internal error|^written JSON|^round trip|==ERROR:|^ERROR:' "$log" | cut -d: -f1)
    crash=$(ls "$work/artifacts_$name" 2>/dev/null | head -n 1)
    saved=""
    if [ -n "$crash" ]; then
        mkdir -p build/fuzz/crashes
        cp "$work/artifacts_$name/$crash" "build/fuzz/crashes/$name-$crash"
        saved=" [input: build/fuzz/crashes/$name-$crash]"
    fi
    echo "FAIL - fuzz $name: ${first:-exited with $rc}$saved"
    # The report from its first line on, without libFuzzer's progress lines.
    tail -n +"${report_start:-1}" "$log" | grep -v -E '^(INFO:|#[0-9]+|\s+NEW_FUNC)' | head -n 25 | sed 's/^/  /'
done
exit $status
