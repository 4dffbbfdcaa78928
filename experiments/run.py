#!/usr/bin/env python3
"""The trade-offs between SSMs and Transformers, measured: one command per claim (issue 15; docs/experiments.md).

    experiments/run.py NAME [--smoke] [--out DIR] [--device cpu|cuda[:N]] [--dry-run] ...
    experiments/run.py all --smoke        every experiment's smoke preset (what make test runs)
    experiments/run.py --list             the experiments and their claims

Each writes into --out (default results/NAME/): result.json (the setup, every number, the exact commands with
their times, the commit, the device and the date), table.md (the table, with the published numbers beside
ours) and one or more SVG plots. The full preset (the default) is sized for one H200: --device cuda --bf16,
models of ~20M and ~90M parameters, about 30 minutes an experiment. --smoke runs tiny models for seconds on
the CPU: it checks the pipeline, not the claim. Python 3 standard library only; it drives build/ssm.
"""
import argparse
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ssmexp import exp_bytes, exp_hybrid, exp_noise, exp_recall, exp_state  # noqa: E402
from ssmexp.harness import Context, Failed, Skip, log  # noqa: E402

EXPERIMENTS = {m.NAME: m for m in (exp_bytes, exp_noise, exp_state, exp_hybrid, exp_recall)}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="experiments/run.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="experiments: " + ", ".join(f"{n} (claim {m.CLAIM_NO})" for n, m in EXPERIMENTS.items()))
    ap.add_argument("name", nargs="?", help="an experiment, or all")
    ap.add_argument("--smoke", action="store_true", help="tiny models on the CPU, seconds (the pipeline, not the claim)")
    ap.add_argument("--preset", help="a named preset (--list shows each experiment's; default full, or smoke)")
    ap.add_argument("--out", help="output directory (default results/NAME; with all: DIR/NAME)")
    ap.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda, with --smoke cpu)")
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                    help="mixed precision (default: on for cuda, off on the cpu)")
    ap.add_argument("--threads", type=int, default=0, help="OpenMP threads for ssm (0: all cores)")
    ap.add_argument("--ssm", help="the ssm binary (default build/ssm)")
    ap.add_argument("--data-dir", help="where the corpora and their splits are (default $SSM_DATA_DIR, data/)")
    ap.add_argument("--corpus", help="the text corpus of bytes, hybrid and noise (default linux-docs; "
                                     "also linux-kmf, enwik8)")
    ap.add_argument("--reuse", action="store_true",
                    help="keep training runs in the output that finished with the same command")
    ap.add_argument("--runs", help="train only the runs whose names match one of these regular expressions "
                                   "(comma-separated, e.g. '91M-mamba$,transformer'); with --reuse the others come "
                                   "from earlier calls or are left for later ones (status partial): an experiment "
                                   "split over calls of a few minutes (experiments/device_call.sh)")
    ap.add_argument("--from-cache", action="store_true",
                    help="write the tables and plots from what earlier calls measured (the output's cache.json and "
                         "finished runs; --reuse implied), running nothing: what they did not reach shows as not run "
                         "(status partial). For an experiment split over GPU calls that ran out of them.")
    ap.add_argument("--earlier", metavar="RESULT_JSON",
                    help="an earlier result.json of this experiment and preset: its finished rows stand for the runs "
                         "this call leaves out (with --from-cache: a result completed over sessions whose results "
                         "folder was lost; the rows say earlier: true)")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    ap.add_argument("--list", action="store_true", help="list the experiments")
    args = ap.parse_args(argv)
    for pattern in (args.runs or "").split(","):  # checked before any run starts: one line, not a traceback
        try:
            re.compile(pattern)
        except re.error as e:
            ap.error(f"--runs: {pattern!r} is not a regular expression ({e})")
    if args.list or not args.name:
        for n, m in EXPERIMENTS.items():
            print(f"{n:8} claim {m.CLAIM_NO}: {m.CLAIM}\n         presets: {', '.join(m.PRESETS)}")
        return 0
    names = list(EXPERIMENTS) if args.name == "all" else [args.name]
    preset = args.preset or ("smoke" if args.smoke else "full")
    for n in names:
        if n not in EXPERIMENTS:
            ap.error(f"unknown experiment {n!r} ({', '.join(EXPERIMENTS)}, all)")
        if preset not in EXPERIMENTS[n].PRESETS and args.name != "all":
            ap.error(f"{n} has no preset {preset!r} ({', '.join(EXPERIMENTS[n].PRESETS)})")
    rc = 0
    base_out = args.out
    for n in names:
        mod = EXPERIMENTS[n]
        if preset not in mod.PRESETS:
            log(f"[{n}] has no preset {preset!r}: left out")
            continue
        if args.name == "all" and base_out:
            args.out = str(Path(base_out) / n)
        ctx = Context(n, mod.CLAIM, args)
        t = time.time()
        try:
            if hasattr(mod, "NEEDS"):
                ctx.require_options(mod.NEEDS)
            ctx.check_device()
            mod.run(ctx)
            log(f"[{n}] done in {time.time() - t:.1f} s: {ctx.out if not ctx.dry_run else '(dry run)'}")
        except Skip as e:
            log(f"[{n}] SKIP: {e}")
            if hasattr(mod, "write_skip"):
                mod.write_skip(ctx, str(e))
            else:
                ctx.write({}, [], "", [], status="skipped", reason=str(e))
        except Failed as e:
            log(f"[{n}] FAILED: {e}")
            ctx.write({}, [], "", [], status="failed", reason=str(e))
            rc = 1
    return rc


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # (device_call.sh's BUDGET, or ^C): a training run cut saved its checkpoint
        log("interrupted: finished runs are kept; a run cut mid-way resumes with --reuse (the same command)")
        sys.exit(130)
