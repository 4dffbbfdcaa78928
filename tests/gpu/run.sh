#!/usr/bin/env bash
# Every GPU test in one go, for a machine with an NVIDIA GPU (one command builds and runs them all).
# Ends with "N passed, N failed". Without a GPU each test prints "skip - ..." instead.
#   tests/gpu/run.sh          build (make cuda) and run build/gpu/test_* and the op runner build/test_ops
#   tests/gpu/run.sh DIR      run prebuilt DIR/test_* (built elsewhere, e.g. with OPT="-O3 -march=x86-64-v3")
set -u
cd "$(dirname "$0")/../.."
bin=${1:-build/gpu}
if [ $# -eq 0 ]; then
    make -s -j"$(nproc)" cuda >/dev/null || { echo "FAIL - make cuda"; exit 1; }
fi
log=$(mktemp)
runner=$([ $# -eq 0 ] && echo build/test_ops)
for t in "$bin"/test_* $runner; do
    echo "== $t"
    "$t" 2>&1 | tee -a "$log"
    rc=${PIPESTATUS[0]}
    [ "$rc" -ne 0 ] && ! grep -q "^FAIL" "$log" && echo "FAIL - $t exited with $rc" | tee -a "$log"
done
# the fused SSD and the gated norm's row in registers (by default all but the walks, the backward's row): their op
# cases again with none of them (=0) and with all (=1)
if [ -n "$runner" ]; then
    for f in 0 1; do
        for op in ssd gated; do
            echo "== SSM_SSD_FUSED=$f SSM_GN_FUSED=$f $runner $op"
            SSM_SSD_FUSED=$f SSM_GN_FUSED=$f $runner $op 2>&1 | tee -a "$log"
        done
    done
fi
# the command line on this machine: --device cuda errors, out of GPU memory as one line
ssm=$([ $# -eq 0 ] && echo build/ssm || echo "$bin/ssm")
echo "== tests/test_cli.sh ($ssm)"
SSM=$ssm tests/test_cli.sh 2>&1 | tee -a "$log"
echo "== tests/test_interrupt.sh 5 on the GPU"
SSM=$ssm SSM_DEVICE=cuda tests/test_interrupt.sh 5 2>&1 | tee -a "$log"
echo "== tests/gpu/test_nccl.sh (several GPUs; the 2-GPU cases skip on 1)"
SSM=$ssm tests/gpu/test_nccl.sh 2>&1 | tee -a "$log"
echo "$(grep -c '^ok - ' "$log") passed, $(grep -c '^FAIL - ' "$log") failed"
! grep -q '^FAIL - ' "$log"
