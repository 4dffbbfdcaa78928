#!/usr/bin/env python3
"""Checks what experiments/run.py wrote (tests/test_experiments.sh): result.json, table.md and the SVG plots exist
and parse, the status is ok (or skipped, with the reason naming the missing option), every trained model's
parameter count as ssm info printed it equals experiments/ssmexp/shapes.py's formula. Prints ok / FAIL lines.
    tests/experiments_check.py DIR NAME SECONDS     one experiment's output
    tests/experiments_check.py --unit               the SVG plot module on awkward input
"""
import json
import math
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
fails = 0


def check(name, cond, detail=""):
    global fails
    if cond:
        print(f"ok - {name}")
    else:
        fails += 1
        print(f"FAIL - {name}{': ' + str(detail) if detail else ''}")


def svg_ok(path):
    """(parses as SVG, number of lines drawn)"""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        return False, str(e)
    lines = sum(1 for el in root.iter() if el.tag.endswith("polyline"))
    return root.tag.endswith("svg"), lines


def experiment(out, name, seconds):
    out = Path(out)
    try:
        r = json.loads((out / "result.json").read_text())
    except (OSError, ValueError) as e:
        check(f"experiments: {name} --smoke wrote result.json", False, str(e))
        return
    status = r.get("status")
    keys = ["experiment", "claim", "preset", "date", "git", "device", "driver", "commands", "rows", "plots"]
    missing = [k for k in keys if k not in r]
    check(f"experiments: {name} result.json has {', '.join(keys)}", not missing, f"missing {missing}")
    check(f"experiments: {name} result.json records the commit and the device",
          bool((r.get("git") or {}).get("commit")) and bool((r.get("device") or {}).get("cpu")))
    table = out / "table.md"
    text = table.read_text() if table.exists() else ""
    check(f"experiments: {name} table.md written", text.startswith(f"# {name}:") and "|---" in text)
    if status == "skipped":
        check(f"experiments: {name} skipped with a reason naming the missing option ({seconds} s)",
              "needs ssm" in (r.get("reason") or ""), r.get("reason"))
        return
    check(f"experiments: {name} --smoke status ok ({seconds} s)", status == "ok", f"{status}: {r.get('reason')}")
    check(f"experiments: {name} ran its commands, each recorded with its time",
          len(r["commands"]) > 0 and all("cmd" in c and ("wall_s" in c or c.get("reused")) for c in r["commands"]))
    plots = r.get("plots") or []
    check(f"experiments: {name} made its plots", len(plots) >= 1)
    for p in plots:
        ok, lines = svg_ok(out / p)
        check(f"experiments: {name} {p} is an SVG with lines drawn", ok and isinstance(lines, int) and lines > 0,
              f"{lines}")
        check(f"experiments: {name} table.md shows {p}", f"]({p})" in text)
    rows = r.get("rows") or []
    check(f"experiments: {name} result rows", len(rows) > 0)
    counted = [x for x in rows if "params_formula" in x]
    bad = [(x["name"], x["params"], x["params_formula"]) for x in counted if x["params"] != x["params_formula"]]
    if counted:
        check(f"experiments: {name} parameters: ssm info = shapes.py's count for {len(counted)} models", not bad,
              str(bad))
    errs = [x.get("error") for x in rows if x.get("error")]
    check(f"experiments: {name} no run failed", not errs, str(errs[:3]))
    for key in ("test_bpb", "test_bits_per_real_byte"):  # a score the table shows as "-" is a parse that failed
        if any(key in x for x in rows):
            gaps = [x.get("name", x.get("model")) for x in rows if not isinstance(x.get(key), (int, float))]
            check(f"experiments: {name} every row has its {key}", not gaps, str(gaps[:4]))


def unit():
    from ssmexp import shapes
    from ssmexp.svgplot import LinePlot, log_ticks, nice_ticks, pow2, si
    p = LinePlot("empty", "x", "y")
    check("svgplot: a plot with no data is still an SVG", ET.fromstring(p.svg()).tag.endswith("svg"))
    p = LinePlot("awkward <&>", "x", "y", logx=True, logy=True)
    p.add("a & b", [0, 1, 2, 4, None, 8], [1, math.nan, 3, -1, 5, math.inf])
    p.add("one point", [3], [3])
    root = ET.fromstring(p.svg())
    check("svgplot: NaN, None, inf and values <= 0 on log axes are left out; text is escaped",
          root.tag.endswith("svg") and sum(1 for el in root.iter() if el.tag.endswith("polyline")) >= 2)
    t, _ = nice_ticks(0.13, 0.87)
    check("svgplot: linear ticks are round and cover the range", t[0] <= 0.2 and t[-1] >= 0.8 and len(t) <= 10, t)
    check("svgplot: log ticks at powers, or 1-2-5 within a decade",
          log_ticks(1, 1e6) == [10**k for k in range(7)] and len(log_ticks(1, 1e15)) <= 9 and
          log_ticks(2, 9) == [2, 5], (log_ticks(1, 1e6), log_ticks(1, 1e15)))
    check("svgplot: tick labels", si(1500) == "1.5k" and si(2e6) == "2M" and pow2(65536) == "64K" and pow2(1 << 20) == "1M")
    from ssmexp.harness import parse_eval
    check("harness: ssm eval's bits per byte and per real byte read",
          parse_eval("loss 1.0 nats/byte, 1.442695 bits/byte\n") == {"bpb": 1.442695} and
          parse_eval("loss 1.2 nats/real byte, 1.733413 bits per real byte (1574944 real bytes scored)\n") ==
          {"bpb": 1.733413})
    import tempfile
    from ssmexp.corpora import Corpus, split_sizes
    with tempfile.TemporaryDirectory() as d:
        data = bytes((i * 7919 + i // 251) % 256 for i in range(300_000))
        train, val, _ = split_sizes(len(data))
        tv, te = Path(d) / "c.trainval.txt", Path(d) / "c.test.txt"
        tv.write_bytes(data[:train + val]), te.write_bytes(data[train + val:])
        h = Corpus("c", tv, te).with_hole(Path(d) / "out")
        a, n = h.hole_at, h.hole_bytes
        kept, hole = h.trainval.read_bytes(), h.hole.read_bytes()
        check("harness: the held-out slice is cut from the training split alone, the validation bytes kept at the "
              "end, nothing lost", hole == data[a:a + n] and kept == data[:a] + data[a + n:train + val] and
              n == train // 20 and 0 < a and a + n <= train and int(len(kept) * h.val_fraction) == val and
              h.train_bytes + n == train, (a, n, len(kept), h.val_fraction))
    check("shapes: a fraction's unit", [shapes.fraction_unit(f) for f in ("0", "1/12", "1/4", "1/2", "1")] ==
          ["m", "mmmmmmmmmmmaf", "mmmaf", "maf", "af"])
    t, picks = shapes.match_fractions(["0", "1/12", "1/8", "1/4", "1/2", "1"], {"d_model": 384},
                                      shapes.params({"d_model": 384, "n_layer": 24}))
    worst = max(abs(shapes.params(s) / t - 1) for _, _, s in picks)
    check(f"shapes: the hybrid preset's models within 5% of one parameter count (worst {worst:.1%})", worst < 0.05)
    check("shapes: FLOPs per byte grow with the window for attention, not for Mamba",
          shapes.flops_per_byte({"d_model": 64, "n_layer": 2, "layers": "af"}, 4096) >
          shapes.flops_per_byte({"d_model": 64, "n_layer": 2, "layers": "af"}, 64) and
          shapes.flops_per_byte({"d_model": 64, "n_layer": 2}, 4096) ==
          shapes.flops_per_byte({"d_model": 64, "n_layer": 2}, 64))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--unit"]:
        unit()
    else:
        experiment(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "?")
    sys.exit(1 if fails else 0)
