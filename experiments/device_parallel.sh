#!/usr/bin/env bash
# Several groups of one experiment's runs at once on one GPU, each group a device_call.sh in its own copy of the
# checkout: the recall experiment's models (d_model 64-512, 2-4 layers) run many small kernels, and a call can keep
# several of them training. (Processes share a GPU by time slices, not at once: whether several beat one at a time
# was not measured. Since 6d8464c a d_model 256 MQAR step alone is 15.5 ms; two selective-copying runs together took
# 8.6 ms a step each; docs/experiments.md.)
#   on the machine:  experiments/device_parallel.sh NAME 'GROUP1' 'GROUP2' ... [-- run.py options]
#                    (each GROUP a --runs value; carry .devbuild and results/NAME; OUT set by the device tool)
#   here, after:     tar xf OUT/parts.tar -C /tmp/parts && experiments/merge_results.py results/NAME \
#                        /tmp/parts/part*/NAME.tar.xz
# Each group's copy starts from results/NAME (or RESULTS, as for device_call.sh: what earlier calls finished) and
# packs its own NAME.tar.xz and call.log into partN/ of $OUT/parts.tar (one file: the device tool returns only a
# few). BUDGET (seconds) applies to each group; a run it cuts resumes in the next call where its weights are small
# (device_call.sh), else it is lost. OpenMP gets the cores shared out, its threads
# sleeping when idle (the groups' spinning threads would otherwise take the CPU from each other).
set -uo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: experiments/device_parallel.sh NAME GROUP... [-- run.py options]}
shift
groups=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do groups+=("$1"); shift; done
[ $# -gt 0 ] && shift
[ ${#groups[@]} -gt 0 ] || { echo "device_parallel.sh: name at least one group of runs" >&2; exit 2; }
out=${OUT:-/tmp/device_call_out}
res=${RESULTS:-results/$name}
ssm=$(realpath "${SSM:-.devbuild/ssm}")
root=$(mktemp -d /tmp/device_parallel.XXXXXX)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( $(nproc) / ${#groups[@]} > 0 ? $(nproc) / ${#groups[@]} : 1 ))}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
mkdir -p "$out"
pids=()
for i in "${!groups[@]}"; do
    w=$root/w$i
    mkdir -p "$w" "$root/parts/part$i"
    # the sources the experiment reads, and its results so far; the binary and the data are shared
    cp -a experiments scripts "$w"/
    mkdir -p "$w/$(dirname "$res")" && { [ ! -d "$res" ] || cp -a "$res" "$w/$res"; }
    [ ! -d data ] || ln -s "$(realpath data)" "$w/data"
    [ ! -d data-mirror ] || ln -s "$(realpath data-mirror)" "$w/data-mirror"
    (OUT=$root/parts/part$i RESULTS=$res SSM=$ssm "$w/experiments/device_call.sh" "$name" --runs "${groups[$i]}" "$@" \
        > "$root/parts/part$i/call.log" 2>&1; echo "exit $?" >> "$root/parts/part$i/call.log") &
    pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
for i in "${!groups[@]}"; do echo "== group $i (${groups[$i]}): $(tail -1 "$root/parts/part$i/call.log")"; done
tar cf "$out/parts.tar" -C "$root/parts" . && ls -la "$out/parts.tar"
rm -rf "$root"
exit $rc
