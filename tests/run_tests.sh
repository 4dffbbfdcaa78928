#!/usr/bin/env bash
# Runs every test (make test calls this after building) and ends with "N passed, N failed".
#   SSM_DATA_DIR      where tinyshakespeare.txt is (default: data/, else ../shared/data/)
#   SSM_FUZZ_SECONDS  seconds per libFuzzer harness (default 20; 0 skips fuzzing)
set -u
cd "$(dirname "$0")/.."
if [ -z "${SSM_DATA_DIR:-}" ]; then
    if [ -f data/tinyshakespeare.txt ]; then export SSM_DATA_DIR=data; else export SSM_DATA_DIR=../shared/data; fi
fi
log=$(mktemp /tmp/ssm_tests.XXXXXX)
trap 'rm -f "$log" /tmp/ssm_torch_dump.$$.safetensors' EXIT

run() { # run NAME CMD...: stream its output, keep it for the tally
    echo "== $1"
    shift
    "$@" 2>&1 | tee -a "$log"
    local rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ] && ! grep -q "^FAIL - " "$log"; then echo "FAIL - $* exited with $rc" | tee -a "$log"; fi
}

for t in build/test_*; do run "$t" "$t"; done
for t in build/gpu/test_*; do [ -x "$t" ] && run "$t" "$t"; done # print "skip - ..." without a GPU
# the CUDA flash attention and fused decode kernels run on the CPU by an emulator, against the CPU (needs the CUDA headers)
run "tests/emu/run.sh (flash attention, fused decode: emulated)" tests/emu/run.sh
run tests/test_cli.sh tests/test_cli.sh
run tests/test_cli_runs.sh tests/test_cli_runs.sh
run tests/test_cli_tasks.sh tests/test_cli_tasks.sh
run "tests/test_mpi.sh (data parallel over MPI)" tests/test_mpi.sh # "skip - ..." in a build without MPI
run tests/test_experiments.sh tests/test_experiments.sh # experiments/run.py: every smoke preset, the plots, get_data.sh
run "tests/mini_einops_check.py (the Mamba-2 reference bench's einops)" /usr/bin/python3 tests/mini_einops_check.py
run "tests/test_interrupt.sh 10" tests/test_interrupt.sh 10
run "tests/test_interrupt.sh 3 (hybrid maf)" env SSM_LAYERS=maf tests/test_interrupt.sh 3
run "tests/test_interrupt.sh 2 (a synthetic task)" env SSM_TASK=mqar:seq=64,pairs=8 tests/test_interrupt.sh 2
run "tests/test_interrupt.sh 2 (filler bytes)" env SSM_NOISE=0.5 tests/test_interrupt.sh 2
# the same CLI tests on build/asan/ssm (AddressSanitizer + UBSan, leak checks on; see the Makefile)
run "make check-sanitize (tests/test_cli*.sh on build/asan/ssm)" make -s --no-print-directory check-sanitize

# the PyTorch oracle: a Mamba-1 model, hybrids of every layer kind, and NemotronH's forms (":nemotron": attention
# without rotary positions, the relu2 MLP)
for spec in m maf Mmaf Maf:nemotron; do
    layers=${spec%%:*} forms=${spec#"$layers"}
    echo "== PyTorch oracle (tests/torch_ref.py), layers $spec"
    dump=/tmp/ssm_torch_dump.$$.safetensors
    if ! build/torch_dump "$dump" "$layers" ${forms:+"${forms#:}"} >/dev/null; then
        echo "FAIL - torch_dump could not write $dump" | tee -a "$log"
    elif out=$(/usr/bin/python3 tests/torch_ref.py "$dump" 2>&1); then
        echo "$out" | sed 's/^/  /'
        echo "ok - PyTorch oracle (layers $spec): logits, loss, every gradient within 1e-4; 10 AdamW steps match" |
            tee -a "$log"
    else
        echo "$out" | sed 's/^/  /'
        echo "FAIL - PyTorch oracle, layers $spec (is python3-torch installed? .ci/run installs it)" | tee -a "$log"
    fi
done

run "tests/fuzz/run.sh ${SSM_FUZZ_SECONDS:-20} (libFuzzer)" tests/fuzz/run.sh "${SSM_FUZZ_SECONDS:-20}"

passed=$(grep -c "^ok - " "$log")
failed=$(grep -c "^FAIL - " "$log")
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
