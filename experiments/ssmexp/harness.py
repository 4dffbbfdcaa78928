"""What every experiment shares: running build/ssm (each command recorded exactly, with its time and log),
training runs and their metrics (reused, resumed, or left for another call), `ssm info` / `ssm eval` parsed, and the
three outputs: result.json, table.md and the SVG plots. (The corpora: corpora.py; bench's decode: decode_bench.py.)
"""
import datetime
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from . import shapes
from .base import REPO, Failed, Skip, log  # noqa: F401 (Skip, log: the experiments' and run.py's through here)
from .corpora import CORPORA, SMOKE_CORPUS_BYTES, Corpus, DryCorpus, split_name
from .decode_bench import parse_bytes


def now_utc():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def git_state():
    def git(*a):
        r = subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
            "dirty": bool(status) if status is not None else None}


def finished_command(rundir):
    """The command a finished training run in rundir ran (its stamp, written last, and its best checkpoint), or
    None: what --reuse keeps, and what experiments/merge_results.py brings from a device call's pack."""
    stamp = Path(rundir) / "experiment_command.txt"
    if not stamp.exists() or not (Path(rundir) / "best" / "config.json").exists():
        return None
    return stamp.read_text()


def resumable_step(rundir, cmd=None):
    """The step of a training run that was cut (a call's time ran out: ssm train saved a checkpoint at SIGINT) and
    can go on (its start stamp and its checkpoint's weights are here; with cmd, the stamp is that command), or None.
    A finished run is not resumable."""
    rundir = Path(rundir)
    started, state = rundir / "experiment_started.txt", rundir / "checkpoint" / "train_state.json"
    if finished_command(rundir) is not None or not started.exists() or not state.exists() \
            or not (rundir / "checkpoint" / "model.safetensors").exists():
        return None
    if cmd is not None and started.read_text() != cmd:
        return None
    try:
        return int(json.loads(state.read_text())["step"])
    except (ValueError, KeyError, TypeError):
        return None


def device_state(device, threads):
    """The machine in words: the CPU (model, cores, threads used) and, for cuda, the GPU as nvidia-smi names it."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    out = {"device": device, "cpu": cpu, "cpu_cores": os.cpu_count(), "threads": threads or "all",
           "os": platform.platform()}
    if device.startswith("cuda"):
        index = device.split(":", 1)[1] if ":" in device else "0"
        try:
            r = subprocess.run(["nvidia-smi", "-i", index, "--query-gpu=name,memory.total,driver_version",
                                "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
            out["gpu"] = r.stdout.strip() or r.stderr.strip()
        except (OSError, subprocess.TimeoutExpired) as e:
            out["gpu"] = f"nvidia-smi: {e}"
    return out


def fmt(v, digits=3):
    """A number for a table: None and NaN as '-', floats to `digits` decimals."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def md_table(headers, rows):
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
    return "\n".join(lines) + "\n"


def read_metrics(path):
    """metrics.jsonl -> (steps, validations): lists of dicts; a torn last line is ignored."""
    steps, vals = [], []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    o = json.loads(line)
                except ValueError:
                    continue
                (vals if any(k.startswith("val_") for k in o) else steps).append(o)
    except OSError:
        pass
    return steps, vals


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def parse_info(text):
    """`ssm info` -> {"params": N, "state": {kind: {context_label: bytes}}, "layers": {kind: count}}."""
    out = {"params": None, "state": {}, "layers": {}}
    m = re.search(r"^parameters: (\d+)", text, re.M)
    if m:
        out["params"] = int(m.group(1))
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("inference state per sequence"):
            header = lines[i + 1].split()[2:]  # after "kind layers"
            for row in lines[i + 2:]:
                if not row.startswith("  "):
                    break
                toks = row.split()
                kind, layers, sizes = toks[0], int(toks[1]), re.findall(r"[0-9.]+ [KMGT]?i?B", row)
                out["layers"][kind] = layers
                out["state"][kind] = {h: parse_bytes(s) for h, s in zip(header, sizes)}
            break
    return out


class Context:
    """One experiment's run: its options, output directory, the commands it ran and its result files."""

    def __init__(self, name, claim, args):
        self.name, self.claim, self.args = name, claim, args
        self.preset = args.preset or ("smoke" if args.smoke else "full")
        self.smoke, self.dry_run, self.reuse = self.preset == "smoke", args.dry_run, args.reuse
        self.out = Path(args.out or REPO / "results" / name).resolve()
        self.ssm = str(Path(args.ssm).resolve()) if args.ssm else str(REPO / "build" / "ssm")
        self.device = args.device or ("cpu" if self.smoke else "cuda")
        self.bf16 = args.bf16 if args.bf16 is not None else (not self.smoke and self.device.startswith("cuda"))
        # tiny models gain nothing from threads, and on a loaded machine OpenMP's spinning threads can make a
        # 1-second smoke command take a minute: the smoke preset runs on one thread unless told otherwise
        self.threads = args.threads or (1 if self.smoke else 0)
        self.commands = []
        self.failures = []  # runs that failed: the experiment goes on without them, its status "partial"
        # --runs: train only the runs whose names match one of these regular expressions (the others reused, or left
        # for a later call)
        # --from-cache: nothing runs; commands answer from cache.json (and runs are reused) or are left out
        self.from_cache = bool(getattr(args, "from_cache", False))
        self.only = [x for x in (getattr(args, "runs", None) or "").split(",") if x]
        self.deferred = []  # runs --runs left out (not trained, no earlier run to reuse): status "partial"
        # what commands that read a finished model printed (info, eval, bench), by command, kept in cache.json: with
        # --reuse a later call (on a machine without the models' weights) reads them there instead of running them
        self.cache_path = (Path(args.out or REPO / "results" / name).resolve()) / "cache.json"
        self.cache = json.loads(self.cache_path.read_text()) if self.cache_path.exists() else {}
        # --earlier FILE: an earlier call's result.json, whose rows stand for the runs this one leaves out
        self.earlier = None
        if getattr(args, "earlier", None):
            try:
                self.earlier = json.loads(Path(args.earlier).read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:  # (a missing file, or not JSON: one line, nothing written)
                raise SystemExit(f"--earlier {args.earlier}: {e}") from None
            if not isinstance(self.earlier, dict):
                raise SystemExit(f"--earlier {args.earlier}: not a result.json (an object with rows)")
            if (self.earlier.get("experiment"), self.earlier.get("preset")) != (self.name, self.preset):
                raise SystemExit(f"--earlier {args.earlier}: a result of {self.earlier.get('experiment')} "
                                 f"({self.earlier.get('preset')} preset), not of {self.name} ({self.preset})")
        self.t0 = time.time()
        self._help = {}
        if not self.dry_run:
            self.out.mkdir(parents=True, exist_ok=True)

    # ---- paths and data ----------------------------------------------------------------------------------
    def rel(self, p):
        """A path as written in commands: relative to the repository when inside it."""
        p = Path(p).resolve()
        try:
            return str(p.relative_to(REPO))
        except ValueError:
            return str(p)

    def data_dirs(self):
        dirs = [self.args.data_dir] if self.args.data_dir else []
        if os.environ.get("SSM_DATA_DIR"):
            dirs.append(os.environ["SSM_DATA_DIR"])
        dirs += [str(REPO / "data"), str(REPO.parent / "shared" / "data")]
        return [Path(d) for d in dirs]

    def corpus(self, name):
        """A corpus by name: the three of get_data.sh, split by it; or tinyshakespeare (the smoke presets': its
        first SMOKE_CORPUS_BYTES), split here by the same rule into the output directory."""
        if name == "tinyshakespeare":
            for d in self.data_dirs():
                src = d / "tinyshakespeare.txt"
                if src.is_file():
                    data = src.read_bytes()
                    if self.smoke:
                        data, name = data[:SMOKE_CORPUS_BYTES], f"tinyshakespeare (its first {SMOKE_CORPUS_BYTES >> 10} KiB)"
                    cut = len(data) * 95 // 100
                    tv, te = self.out / "data" / "tinyshakespeare.trainval.txt", self.out / "data" / "tinyshakespeare.test.txt"
                    if not self.dry_run:
                        tv.parent.mkdir(parents=True, exist_ok=True)
                        tv.write_bytes(data[:cut])
                        te.write_bytes(data[cut:])
                        return Corpus(name, tv, te)
                    return DryCorpus(name, tv, te)
            raise Failed("tinyshakespeare.txt not found in --data-dir, $SSM_DATA_DIR, data/ or ../shared/data "
                         "(make data downloads it)")
        if name not in CORPORA:
            raise Failed(f"unknown corpus {name!r} ({', '.join(CORPORA)})")
        fname, getname = CORPORA[name]
        for d in self.data_dirs():
            tv, te = d / split_name(fname, "trainval"), d / split_name(fname, "test")
            if tv.is_file() and te.is_file():
                return Corpus(name, tv, te)
        if self.dry_run:
            return DryCorpus(name, REPO / "data" / split_name(fname, "trainval"), REPO / "data" / split_name(fname, "test"))
        raise Failed(f"{split_name(fname, 'trainval')} not found in data/ (or --data-dir, $SSM_DATA_DIR): "
                     f"scripts/get_data.sh --mirror ../shared/data data {getname}"
                     f"{'   (enwik8 downloads without --mirror)' if name == 'enwik8' else ''}")

    def corpus_with_hole(self, name):
        """corpus(name).with_hole(...): the files it derives in data/ (git ignores it: the corpora's splits are
        there), or in the output directory for the smoke presets' tinyshakespeare."""
        base = self.corpus(name)
        where = self.out / "data" if name == "tinyshakespeare" else REPO / "data"
        return base.with_hole(where, self.dry_run)

    def synthetic_text(self):
        """A small text file for runs whose data does not matter (the state experiment's models)."""
        p = self.out / "data" / "words.txt"
        if not self.dry_run and not p.exists():
            import random
            rng = random.Random(1)
            words = ["state", "space", "model", "reads", "bytes", "and", "attention", "caches", "them", "the"]
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(" ".join(rng.choice(words) for _ in range(20000)) + "\n")
        return p

    # ---- the ssm commands ----------------------------------------------------------------------------------
    def device_args(self, what):
        """--device, --threads, and --bf16 for training (mixed precision) and bench (decode as deployed); eval
        stays float32 for the final numbers (bf16 GEMMs move the loss by ~1e-2)."""
        out = ["--device", self.device]
        if self.bf16 and self.device.startswith("cuda") and what in ("train", "bench"):
            out.append("--bf16")
        if self.threads:
            out += ["--threads", str(self.threads)]
        return out

    def check_device(self):
        """A one-line failure before anything runs when --device names a GPU this build or machine lacks."""
        if self.dry_run or self.device == "cpu" or self.from_cache:
            return
        r = subprocess.run([self.ssm, "info", "--config", "default"], capture_output=True, text=True)
        line = next((x for x in r.stdout.splitlines() if x.startswith("devices:")), "devices: ?")
        want = self.device if ":" in self.device else "cuda:0"
        if not re.search(re.escape(want) + r"\b", line):
            raise Failed(f"--device {self.device} is not available ({line}): run on a machine with the GPU, or "
                         f"pass --device cpu (slow beyond the smoke preset)")

    def help_text(self, command):
        if command not in self._help:
            r = subprocess.run([self.ssm, command, "--help"], capture_output=True, text=True)
            self._help[command] = r.stdout + r.stderr
        return self._help[command]

    def require_options(self, needs):
        """Skip (status "skipped") unless every (command, option) in needs is in that command's --help."""
        missing = [f"ssm {c} {o}" for c, o in needs if not re.search(re.escape(o) + r"\b", self.help_text(c))]
        if missing and self.dry_run:
            print(f"# this build lacks {', '.join(missing)}: a real run would skip")
        elif missing:
            raise Skip(f"needs {', '.join(missing)} (not in this build's --help)")

    def key(self, argv):
        """A command as the reuse stamps and cache.json know it: the binary as "ssm" (a build here and one carried
        to a GPU machine are the same program), every path relative to the repository."""
        return shlex.join(["ssm" if str(argv[0]) == self.ssm else self.rel(argv[0])] + [str(a) for a in argv[1:]])

    def cached(self, cmd):
        """What cmd returned in an earlier call (cache.json), with --reuse; else None."""
        return self.cache.get(cmd) if (self.reuse or self.from_cache) and not self.dry_run else None

    def remember(self, cmd, value):
        self.cache[cmd] = value
        self.cache_path.write_text(json.dumps(self.cache, indent=1) + "\n", encoding="utf-8")

    def run(self, argv, logname, timeout=None, check=True, cache=False, on_interrupt=False):
        """Runs a command from the repository root, its output in logs/logname.log; recorded in commands. cache: a
        command that reads a finished model (its output kept in cache.json, and with --reuse read from there).
        on_interrupt: at SIGINT (device_call.sh's BUDGET reaches the whole process group) the command is waited for,
        not killed: ssm train saves its checkpoint at the step's end, which the next call resumes."""
        argv = [str(a) for a in argv]
        shown = [self.rel(argv[0]) if argv[0] == self.ssm else argv[0]] + argv[1:]
        cmd = shlex.join(shown)
        if self.dry_run:
            print(cmd)
            return subprocess.CompletedProcess(argv, 0, "", "")
        hit = self.cached(self.key(argv)) if cache else None
        if hit is not None:
            self.commands.append({"cmd": cmd, "cached": True})
            return subprocess.CompletedProcess(argv, 0, hit["out"], hit["err"])
        if self.from_cache:
            self.deferred.append(logname)
            return subprocess.CompletedProcess(argv, "not run", "", "")
        logdir = self.out / "logs"
        logdir.mkdir(parents=True, exist_ok=True)
        logpath = logdir / f"{logname}.log"
        t = time.time()
        try:
            with subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  errors="replace") as p:
                try:
                    out, err = p.communicate(timeout=timeout)
                except subprocess.TimeoutExpired:
                    p.kill()
                    out, err = p.communicate()
                    raise subprocess.TimeoutExpired(argv, timeout, out, err) from None
                except KeyboardInterrupt:
                    out, err = "", ""
                    if on_interrupt:
                        try:  # its own SIGINT came with ours: it is saving a checkpoint
                            out, err = p.communicate(timeout=120)
                        except (subprocess.TimeoutExpired, KeyboardInterrupt):
                            pass
                        logpath.write_text(f"$ {cmd}\n{out}\n--- stderr ---\n{err}\n(interrupted)", encoding="utf-8")
                    p.kill()
                    raise
            rc = p.returncode
        except subprocess.TimeoutExpired as e:
            rc, out, err = "timeout", _text(e.stdout), _text(e.stderr) + f"\n(timed out after {timeout} s)"
        wall = time.time() - t
        logpath.write_text(f"$ {cmd}\n{out}\n--- stderr ---\n{err}", encoding="utf-8")
        self.commands.append({"cmd": cmd, "cwd": str(REPO), "wall_s": round(wall, 3), "rc": rc,
                              "log": self.rel(logpath)})
        if check and rc != 0:
            last = (err.strip().splitlines() or out.strip().splitlines() or ["(no output)"])[-1]
            raise Failed(f"{cmd}\n  exited with {rc}: {last}\n  log: {self.rel(logpath)}")
        if cache and rc == 0:
            self.remember(self.key(argv), {"out": out, "err": err})
        return subprocess.CompletedProcess(argv, rc, out, err)

    def info(self, model, context=None):
        argv = [self.ssm, "info", "--model", self.rel(model)] + (["--context", str(context)] if context else [])
        r = self.run(argv, f"info-{Path(model).parent.name}-{Path(model).name}" + (f"-{context}" if context else ""),
                     cache=True)
        return parse_info(r.stdout)

    def train(self, name, corpus, shape, opts, task=None, extra=()):
        """Trains runs/<name> (a new run; --reuse keeps one that finished with the same command). opts: the
        training options (batch, seq_len, steps, lr, ...) with Python names. Returns a Run."""
        rundir = self.out / "runs" / name
        argv = [self.ssm, "train"]
        if task:
            argv += ["--task", task]
        else:
            argv += ["--data", self.rel(corpus.trainval), "--val-fraction", repr(corpus.val_fraction)]
        argv += ["--out", self.rel(rundir)] + shapes.cli_args(shape)
        for k, v in opts.items():
            argv += ["--" + k.replace("_", "-"), f"{v:.6g}" if isinstance(v, float) else str(v)]
        argv += list(extra) + ["--sample", "0", "--quiet"] + self.device_args("train")
        stamp = rundir / "experiment_command.txt"
        cmd = self.key(argv)
        if (self.reuse or self.from_cache) and not self.dry_run and finished_command(rundir) == cmd:
            log(f"[{self.name}] {name}: reusing {self.rel(rundir)}")
            self.commands.append({"cmd": shlex.join([self.rel(self.ssm)] + [str(a) for a in argv[1:]]),
                                  "reused": True})
        elif self.from_cache or (self.only and not any(re.search(x, name) for x in self.only)):
            log(f"[{self.name}] {name}: left for another call (--runs)")
            self.deferred.append(name)
            return Run(self, name, rundir, shape, opts, error="not run yet (--runs)")
        else:
            # a run an earlier call cut (its checkpoint came back with it): trained on from there, the same command
            at = resumable_step(rundir, cmd) if self.reuse and not self.dry_run else None
            done = at is not None and at >= int(opts.get("steps", at + 1))
            if done:  # cut after its last step's checkpoint (in its last validation, or before the stamp): complete
                log(f"[{self.name}] {name}: its checkpoint is at the last step ({at}): kept as finished")
            elif at is not None:
                log(f"[{self.name}] {name}: resuming at step {at} (cut by an earlier call)")
            else:
                log(f"[{self.name}] train {name}: {shapes.describe(shape)}, d_model {shape['d_model']}, "
                    f"{shapes.human(shapes.params(shape))} parameters")
            try:
                if at is None and not self.dry_run:
                    rundir.mkdir(parents=True, exist_ok=True)
                    (rundir / "experiment_started.txt").write_text(cmd)
                if not done:
                    self.run(argv + (["--overwrite"] if at is None else ["--resume"]),
                             f"train-{name}" + ("" if at is None else f"-from-{at}"), on_interrupt=True)
            except Failed as e:  # the others can still run (a layer kind this device lacks, say)
                log(f"[{self.name}] {name} FAILED: {e}")
                self.failures.append({"run": name, "error": _short(e), "detail": str(e)})
                return Run(self, name, rundir, shape, opts, error=_short(e))
            if not self.dry_run:
                stamp.write_text(cmd)
        run = Run(self, name, rundir, shape, opts)
        run.train_argv = argv
        return run

    def retrain_for(self, run, argv):
        """A reused run whose weights stayed on another machine (device_call.sh brings back no weights), asked for a
        command that no earlier call answered (cache.json): trained again, the same command, so that it can run;
        unless --runs leaves it out (then False: the eval waits for a call that names it, where the groups of
        device_parallel.sh would otherwise each train it again)."""
        if not run.train_argv or (run.best / "model.safetensors").exists() or self.cached(self.key(argv)) is not None \
                or self.from_cache or self.dry_run:
            return True
        if self.only and not any(re.search(x, run.name) for x in self.only):
            log(f"[{self.name}] {run.name}: its weights stayed on another machine; this eval is left for a call "
                "whose --runs names it")
            if run.name not in self.deferred:
                self.deferred.append(run.name)
            return False
        log(f"[{self.name}] {run.name}: its weights stayed on another machine and cache.json lacks this eval: "
            "training it again")
        self.run(run.train_argv + ["--overwrite"], f"train-{run.name}")
        run.steps, run.vals = read_metrics(run.dir / "metrics.jsonl")
        return True

    def eval_run(self, run, data, extra=(), key="bpb", tag=""):
        """`ssm eval` of a run's best model -> the value of key, or None (a failed run, a dry run)."""
        if run.error or self.dry_run:
            return None
        try:
            if not self.retrain_for(run, self.eval_argv(run.best, data, extra)):
                return None
            return self.eval(run.best, data, extra, logname=f"eval-{run.name}{tag}").get(key)
        except Failed as e:
            log(f"[{self.name}] eval of {run.name} FAILED: {e}")
            self.failures.append({"run": f"eval of {run.name}", "error": _short(e), "detail": str(e)})
            return None

    def eval_text(self, run, corpus_file, T, extra=()):
        """Test bits per byte of a language model trained on windows of T, read as trained: every model in windows of
        T from an empty state (`--window T`). A model without attention is also scored with its state carried through
        the whole file (run.test_carried; None for the others): a Mamba trained on windows of 2048 bytes need not read
        a stream far longer than its windows as well (the hybrid experiment's pure Mamba: 1.569 carried, 1.587 in
        windows, docs/experiments/hybrid.md). (A model with attention reads each --chunk T on its own: the same windows, and
        the same command as before --window existed, so that earlier calls' answers in cache.json still count.)"""
        extra = ["--chunk", str(T)] + list(extra)
        recurrent = "a" not in shapes.kinds(run.shape)
        run.test_carried = self.eval_run(run, corpus_file, extra, tag="-carried") if recurrent else None
        return self.eval_run(run, corpus_file, extra + (["--window", str(T)] if recurrent else []))

    def eval(self, model, corpus_file, extra=(), logname="eval"):
        """`ssm eval` -> bits per byte (and accuracy, with a task) from its output."""
        r = self.run(self.eval_argv(model, corpus_file, extra), logname, cache=True)
        return parse_eval(r.stdout + "\n" + r.stderr)

    def eval_argv(self, model, corpus_file, extra=()):
        argv = [self.ssm, "eval", "--model", self.rel(model)]
        if corpus_file is not None:
            argv += ["--data", self.rel(corpus_file)]
        return [str(a) for a in argv + list(extra) + ["--quiet"] + self.device_args("eval")]

    def with_earlier(self, rows):
        """rows, where --earlier's result has a finished row for a run this call left out (deferred), that row
        instead, its commands added to this result's: an experiment spread over sessions whose results folder stayed
        on another machine, the committed result.json its record. What this call measured wins."""
        if not self.earlier:
            return rows
        old = {r["name"]: r for r in self.earlier.get("rows", []) if r.get("name") not in self.earlier.get("deferred", [])
               and not r.get("error")}
        out = []
        for r in rows:
            name = r.get("name")
            if name in old and name in self.deferred:
                # the run and its commands (evals, info: every one that names its directory)
                self.deferred = [d for d in self.deferred if d not in (name, f"eval-{name}")
                                 and not d.startswith(f"eval-{name}-")]
                mine = re.compile(rf"/runs/{re.escape(name)}(/|\s|$)")
                self.commands += [c for c in self.earlier.get("commands", []) if mine.search(c["cmd"])]
                r = dict(old[name], earlier=True)
            out.append(r)
        return out

    # ---- results -------------------------------------------------------------------------------------------
    def plot_note(self):
        return f"ssm {self.preset} preset, {self.device}{' bf16' if self.bf16 else ''}, {datetime.date.today()}"

    def write(self, setup, rows, table_md, plots, published=(), summary=None, status="ok", reason=None):
        """result.json (everything, with the exact commands, commit, device, date) and table.md."""
        if self.dry_run:
            return
        if status == "ok" and self.failures:
            status, reason = "partial", "; ".join(f"{f['run']}: {f['error']}" for f in self.failures)
        if status == "ok" and self.deferred:
            status, reason = "partial", "not run yet: " + ", ".join(self.deferred)
        result = {
            "experiment": self.name, "claim": self.claim, "preset": self.preset, "status": status,
            "reason": reason, "date": now_utc(), "wall_s": round(time.time() - self.t0, 1),
            "git": git_state(), "device": device_state(self.device, self.threads), "ssm": self.rel(self.ssm),
            "driver": shlex.join([self.rel(sys.argv[0])] + sys.argv[1:]), "setup": setup, "rows": rows,
            "published": list(published), "summary": summary or {}, "plots": [Path(p).name for p in plots],
            "failures": self.failures, "deferred": self.deferred, "commands": self.commands,
        }
        (self.out / "result.json").write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")
        g = result["git"]
        head = [f"# {self.name}: {self.claim}", "",
                f"Preset `{self.preset}`; {self.device}{' (bf16 mixed precision)' if self.bf16 else ''}; "
                f"commit {(g['commit'] or '?')[:12]}{' (with local changes)' if g['dirty'] else ''}; "
                f"{result['date']}; {result['wall_s']} s. Reproduce: `{result['driver']}`; every command it ran, "
                f"with its time: result.json.", ""]
        body = table_md if status == "ok" else f"**{status.capitalize()}:** {reason}\n\n{table_md}"
        figs = "".join(f"\n![{Path(p).stem}]({Path(p).name})\n" for p in plots)
        (self.out / "table.md").write_text("\n".join(head) + body + figs, encoding="utf-8")
        log(f"[{self.name}] wrote {self.rel(self.out / 'result.json')}, table.md"
            + "".join(f", {Path(p).name}" for p in plots))


def _short(e):
    """A Failed's one line: "exited with 1: the error" (its first line is the command)."""
    lines = str(e).splitlines()
    return lines[1].strip() if len(lines) > 1 else str(e)


def _text(b):
    if b is None:
        return ""
    return b.decode(errors="replace") if isinstance(b, bytes) else b


def parse_eval(text):
    """`ssm eval` output -> {"bpb": bits per (real) byte, "accuracy": ...} (whichever it printed)."""
    out = {}
    m = re.search(r"([0-9.]+|nan|inf)\s+bits(?:/| per )(?:real )?byte", text)
    if m:
        out["bpb"] = float(m.group(1))
    m = re.search(r"accuracy\s*:?\s*([0-9.]+)(%?)", text)
    if m:
        a = float(m.group(1))
        out["accuracy"] = a / 100 if m.group(2) == "%" or a > 1 else a
    return out


class Run:
    """A finished training run: its metrics, parameter count (ssm info), FLOPs and curve."""

    def __init__(self, ctx, name, rundir, shape, opts, error=None):
        self.ctx, self.name, self.dir, self.shape, self.opts, self.error = ctx, name, rundir, shape, opts, error
        self.test_carried = None  # ctx.eval_text: a recurrent model's test bpb with its state carried
        self.train_argv = None  # the command that trained it (ctx.train), to train it again where its weights are not
        self.best = rundir / "best"
        seq = int(opts.get("seq_len", 128))
        self.bytes_per_step = int(opts.get("batch", 16)) * seq * int(opts.get("grad_accum", 1))
        self.flops_per_byte = shapes.flops_per_byte(shape, seq)
        self.params_formula = shapes.params(shape)
        self.steps, self.vals = read_metrics(rundir / "metrics.jsonl")
        self.params = self.params_formula
        self.info = None
        if not ctx.dry_run and not error:
            model = self.best if (self.best / "config.json").exists() else rundir / "checkpoint"
            self.info = ctx.info(model)
            self.params = self.info["params"]

    def curve(self, key="val_bpb"):
        """[(training bytes, value)] at each validation."""
        return [(v["step"] * self.bytes_per_step, v.get(key)) for v in self.vals if key in v]

    def best_val(self, key="val_bpb", lowest=True):
        xs = [v.get(key) for v in self.vals if isinstance(v.get(key), (int, float))]
        return (min(xs) if lowest else max(xs)) if xs else None

    def median_step_ms(self):
        """The median step time, leaving out the first 10% of steps (warm-up, first allocations)."""
        ms = [s.get("step_ms") for s in self.steps]
        return median(ms[len(ms) // 10:])

    def total_bytes(self):
        return (self.steps[-1]["step"] if self.steps else 0) * self.bytes_per_step

    def summary(self):
        return {"name": self.name, "dir": self.ctx.rel(self.dir), "shape": self.shape, "layers": shapes.describe(self.shape),
                "params": self.params, "params_formula": self.params_formula,
                "flops_per_byte": self.flops_per_byte, "bytes_per_step": self.bytes_per_step,
                "train_bytes": self.total_bytes(), "train_flops": self.total_bytes() * self.flops_per_byte,
                "median_step_ms": self.median_step_ms(), "best_val_bpb": self.best_val(), "error": self.error}

