#!/usr/bin/env bash
# One call of an experiment on a GPU machine lent in short calls (a few minutes each, whose outputs come back as a
# few files): the experiment runs with --reuse in results/NAME (what earlier calls left there, carried back), trains
# what --runs names within the time it is given, and its results come back packed without the model weights (a run
# that BUDGET cut keeps its checkpoint where small: the next call resumes it).
#   here, once:      scripts/gpu_prebuild.sh            (.devbuild/ssm, a CUDA build for that machine)
#                    mkdir -p data-mirror && cp ../shared/data/linux-docs.txt.xz data-mirror/   (ignored by git)
#   on the machine:  experiments/device_call.sh NAME [run.py options: --runs mamba ...]
#                    (carry .devbuild, data-mirror and results/NAME; OUT set by the device tool)
#   here, after:     tar xJf OUT/NAME.tar.xz            (into results/NAME; then the next call, or the table)
# The corpora are unpacked from data-mirror/ into data/ (scripts/get_data.sh: checksummed, split). BUDGET (seconds,
# default 520) stops the experiment before the call's limit: runs it did not reach stay for the next call, a run it
# cut resumes there (ssm train saves a checkpoint at the SIGINT). RESULTS
# (default results/NAME) is the results folder, for a second set of the same experiment (e.g. bytes on linux-kmf:
# RESULTS=results/bytes-kmf ... bytes --corpus linux-kmf; the pack is then bytes-kmf.tar.xz).
set -uo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: experiments/device_call.sh NAME [experiments/run.py options]}
shift
res=${RESULTS:-results/$name}
out=${OUT:-/tmp/device_call_out}
mkdir -p "$out" data
for c in linux-docs linux-kmf; do
    ! ls data-mirror/"$c".*xz >/dev/null 2>&1 || scripts/get_data.sh --mirror data-mirror data "$c" >/dev/null
done
ssm=${SSM:-.devbuild/ssm}
[ -x "$ssm" ] || ssm=build/ssm
PYTHONUNBUFFERED=1 timeout --signal=INT "${BUDGET:-520}" \
    experiments/run.py "$name" --reuse --ssm "$ssm" --out "$res" "$@"
rc=$?
# the results without weights (model and optimizer files): metrics, logs, result.json, table.md, plots, cache.json;
# but a run cut by BUDGET keeps its checkpoint when small (at most 8 MB of weights: the device tool returns files of
# up to 16 MiB, and device_parallel.sh packs every group's into one), so that the next call resumes it
skip=$(mktemp)
python3 - "$res" >"$skip" <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, "experiments")
from ssmexp.harness import resumable_step
res = Path(sys.argv[1])
weights = lambda run: sum({f.stat().st_ino: f.stat().st_size for f in run.rglob("*.safetensors")}.values())
for f in sorted(res.rglob("*.safetensors")):
    run = next((p for p in f.parents if p.parent.name == "runs"), None)
    if run is None or resumable_step(run) is None or weights(run) > 8 << 20:
        print(f)
PY
tar cJf "$out/$(basename "$res").tar.xz" -X "$skip" "$res"
rm -f "$skip"
ls -la "$out/$(basename "$res").tar.xz"
exit $rc
