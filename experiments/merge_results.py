#!/usr/bin/env python3
"""Merges packed results of one experiment (device_call.sh's NAME.tar.xz, one per group of
experiments/device_parallel.sh) into a results folder: each pack's finished runs (as --reuse knows them), runs
cut with their checkpoint (resumed by the next call) and logs replace the folder's, and cache.json becomes the union
of all. Then `experiments/run.py NAME --from-cache
--out FOLDER` writes the table and plots.
    experiments/merge_results.py results/recall OUT/part*/recall.tar.xz"""
import argparse
import json
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ssmexp.harness import finished_command, resumable_step  # noqa: E402


def merge_pack(into, pack):
    """Merges one pack into the folder `into`; returns the names of the runs it brought (finished, or cut)."""
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(pack) as t:
            try:
                t.extractall(tmp, filter="data")  # (members outside tmp, links and devices refused)
            except TypeError:  # a Python without extraction filters (before 3.11.4): our own packs only
                t.extractall(tmp)
        found = list(Path(tmp).rglob("cache.json")) or list(Path(tmp).rglob("runs"))
        if not found:
            sys.exit(f"merge_results.py: {pack} holds no experiment results (no cache.json, no runs/)")
        src = found[0].parent
        brought = []
        for run in sorted((src / "runs").glob("*")) if (src / "runs").is_dir() else []:
            dest = into / "runs" / run.name
            finished = finished_command(run) is not None
            at = None if finished else resumable_step(run)
            # cut in that call: brought with its checkpoint, unless none came back or the folder's copy is further on
            if not finished and (at is None or finished_command(dest) is not None
                                 or (resumable_step(dest) or -1) >= at):
                continue
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(run, dest)
            brought.append(run.name if at is None else f"{run.name} (cut at step {at}: the next call resumes it)")
        if (src / "logs").is_dir():
            shutil.copytree(src / "logs", into / "logs", dirs_exist_ok=True)
        cache = {}
        if (src / "cache.json").exists():
            cache = json.loads((src / "cache.json").read_text())
        return brought, cache


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("into", type=Path, help="the results folder (e.g. results/recall); created if missing")
    ap.add_argument("packs", nargs="+", type=Path, help="NAME.tar.xz files from device calls")
    a = ap.parse_args()
    a.into.mkdir(parents=True, exist_ok=True)
    cache_path = a.into / "cache.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    for pack in a.packs:
        try:
            brought, c = merge_pack(a.into, pack)
        except (OSError, tarfile.TarError) as e:  # (the packs before it stay merged, their cache written)
            sys.exit(f"merge_results.py: {pack}: {' '.join(str(e).split())}")
        cache.update(c)
        tmp = cache_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(cache, indent=1) + "\n", encoding="utf-8")
        tmp.replace(cache_path)
        print(f"{pack}: {len(brought)} runs ({', '.join(brought) or 'none'}), {len(c)} cached commands")


if __name__ == "__main__":
    main()
