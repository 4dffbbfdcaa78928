"""`ssm bench`'s decode at one context, measured as it runs (its time, its state, the process's peak memory on the CPU
and on a GPU), and the sizes and context labels ssm prints."""
import os
import re
import shlex
import signal
import subprocess
import time

from .base import REPO


UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4}


def parse_bytes(s):
    """'152.0 KiB' -> 155648.0 (as ssm prints sizes)."""
    m = re.match(r"([0-9.]+)\s*([KMGT]?i?B)", s.strip())
    return float(m.group(1)) * UNITS[m.group(2)] if m else None


def context_label(n):
    """As ssm labels contexts: 1K, 64K, 1M, or the number."""
    if n % (1 << 20) == 0:
        return f"{n >> 20}M"
    if n % 1024 == 0:
        return f"{n >> 10}K"
    return str(n)


def parse_context(s):
    """'64K' -> 65536, '1M' -> 1048576, '300' -> 300."""
    s = str(s).strip()
    mult = {"K": 1 << 10, "k": 1 << 10, "M": 1 << 20, "m": 1 << 20}.get(s[-1:], 1)
    return int(s[:-1] if mult > 1 else s) * mult


def bench_decode(ctx, model, context, decode_steps, logname, timeout, extra=()):
    """`ssm bench --model DIR --what decode --contexts N`, one context per process, measured as it runs: the
    decode time per step at that context (as bench reports it), the state it reports, and the process's peak
    memory up to the end of that decode: VmHWM from /proc on the CPU, and on a GPU the device memory of the
    process as nvidia-smi reports it (sampled every 0.2 s while it runs: a short decode's cache can come and go
    between two samples) and the peak of ssm's own device allocations, which bench prints at the row's end. The bench's later rows (its memory
    bandwidth probe on the CPU) are not waited for: the process is stopped and killed once the context's row is
    out. Returns a dict, or one with "error"."""
    argv = [ctx.ssm, "bench", "--model", ctx.rel(model), "--what", "decode", "--contexts", str(context),
            "--decode-steps", str(decode_steps), "--decode-batch", "1"] + list(extra) + ctx.device_args("bench")
    cmd = shlex.join([ctx.rel(ctx.ssm)] + argv[1:])
    if ctx.dry_run:
        print(cmd)
        return {}
    # a timeout is a result too (for that limit): kept, so that a later call does not spend the limit again
    timeout_key = ctx.key(argv + [f"(timeout {timeout} s)"])
    hit = ctx.cached(ctx.key(argv))
    if hit is None:
        hit = ctx.cached(timeout_key)
    if hit is not None:
        ctx.commands.append({"cmd": cmd, "cached": True})
        return hit
    if ctx.from_cache:
        ctx.deferred.append(logname)
        return {"error": "not run yet"}
    import pty
    import select
    logdir = ctx.out / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    logpath = logdir / f"{logname}.log"
    master, slave = pty.openpty()  # a terminal: bench's rows arrive as they are printed
    errf = open(logpath.with_suffix(".err"), "w")
    t = time.time()
    p = subprocess.Popen(argv, cwd=REPO, stdout=slave, stderr=errf, stdin=subprocess.DEVNULL)
    os.close(slave)
    on_gpu = ctx.device.startswith("cuda")
    buf, row, gpu_peak, status = b"", None, 0.0, None
    last_poll = 0.0
    while True:
        if time.time() - t > timeout:
            status = f"timeout after {timeout} s"
            break
        if on_gpu and time.time() - last_poll > 0.2:
            gpu_peak = max(gpu_peak, gpu_memory_of(p.pid))
            last_poll = time.time()
        r, _, _ = select.select([master], [], [], 0.05)
        if r:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
            # the whole row (its end may say the process's device peak)
            m = re.search(rb"decode batch 1 at \S+\s+([0-9.]+)\s+([0-9.]+)\s+state ([0-9.]+ [KMGT]?i?B)([^\n]*)\n", buf)
            if m:
                row = m
                break
        elif p.poll() is not None:
            # drain what is left
            try:
                while True:
                    chunk = os.read(master, 65536)
                    if not chunk:
                        break
                    buf += chunk
            except OSError:
                pass
            break
    hwm = None
    if p.poll() is None:
        try:
            os.kill(p.pid, signal.SIGSTOP)  # hold it where it is: the peak so far, nothing of the later rows
        except ProcessLookupError:
            pass
        hwm = vm_hwm(p.pid)
        if on_gpu:
            gpu_peak = max(gpu_peak, gpu_memory_of(p.pid))
        os.kill(p.pid, signal.SIGKILL)
    p.wait()
    os.close(master)
    errf.close()
    wall = time.time() - t
    text = buf.decode(errors="replace").replace("\r\n", "\n")
    err = logpath.with_suffix(".err").read_text(errors="replace")
    logpath.write_text(f"$ {cmd}\n{text}\n--- stderr ---\n{err}", encoding="utf-8")
    logpath.with_suffix(".err").unlink()
    rec = {"cmd": cmd, "cwd": str(REPO), "wall_s": round(wall, 3), "rc": 0 if row else (status or p.returncode),
           "log": ctx.rel(logpath)}
    ctx.commands.append(rec)
    if not row:
        last = (err.strip().splitlines() or text.strip().splitlines() or ["(no output)"])[-1]
        if status:
            ctx.remember(timeout_key, {"error": status})
        return {"error": status or last}
    out = {"ms_per_step": float(row.group(1)), "bytes_per_s": float(row.group(2)),
           "state_bytes": parse_bytes(row.group(3).decode())}
    if hwm is not None:
        out["peak_rss_bytes"] = hwm
    if on_gpu:
        out["gpu_memory_bytes"] = gpu_peak or None
    dp = re.search(rb"device peak ([0-9.]+ [KMGT]?i?B)", row.group(4))
    if dp:
        out["device_peak_bytes"] = parse_bytes(dp.group(1).decode())
    ctx.remember(ctx.key(argv), out)
    return out


def vm_hwm(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def gpu_memory_of(pid):
    """The device memory nvidia-smi attributes to this process, in bytes (0 when it cannot say)."""
    try:
        r = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                           capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    for line in r.stdout.splitlines():
        parts = [x.strip() for x in line.split(",")]
        if len(parts) == 2 and parts[0] == str(pid) and parts[1].isdigit():
            return int(parts[1]) * 1024 * 1024
    return 0
