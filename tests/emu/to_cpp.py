#!/usr/bin/env python3
"""A CUDA source as the emulator compiles it (tests/emu/run.sh): prints FILE with
  kernel<<<grid, block[, smem]>>>(args)  as  emu_launch(kernel, grid, block, smem or 0, args)  (over any lines), and
  __shared__ T a[n];  (static shared memory) as  static T a[n];  one copy that a block's threads share, each block's
  own since blocks run one after another (dynamic shared memory, `extern __shared__`, is emu.cpp's smem; an aligned
  static array, `__shared__ __align__(16) T a[n];`, is also made known to emu.cpp as shared memory, where cp.async
  and ldmatrix may address it); and NULL
  as nullptr (a deduced argument type must stay a null pointer).
usage: tests/emu/to_cpp.py FILE > OUT"""
import re
import sys


def split_top(s):
    """s split at its commas outside parentheses, brackets and braces"""
    parts, depth, cur = [], 0, ""
    for ch in s:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    parts.append(cur.strip())
    return parts


def launch(m):
    kernel, cfg = m.group(1), split_top(m.group(2))
    if len(cfg) == 2:
        cfg.append("0")
    if len(cfg) != 3:
        sys.exit(f"to_cpp.py: a launch with {len(cfg)} configuration arguments (stream?): {m.group(0)}")
    return f"emu_launch({kernel}, {', '.join(cfg)}, "


src = open(sys.argv[1]).read()
# an aligned static array (a cp.async destination): aligned, and made known to emu.cpp as shared memory
src = re.sub(r"^(\s*)__shared__\s*__align__\((\d+)\)\s*((?:[\w:]+\s+)+)(\w+)(\[[^;]*\]);",
             r"\1alignas(\2) static \3\4\5; emu_static_smem(\4, sizeof \4);", src, flags=re.M)
src = re.sub(r"^(?!.*extern __shared__)(.*)\b__shared__\b", r"\1static", src, flags=re.M)
# dynamic shared memory under another name or type (extern __shared__ float4 smem4[]): a pointer to emu.cpp's smem
src = re.sub(r"extern __shared__\s*(?:__align__\(\d+\)\s*)?([\w:]+)\s+(?!smem\[)(\w+)\[\];",
             r"extern unsigned char smem[]; \1 *const \2 = reinterpret_cast<\1 *>(smem);", src)
# the kernel: a name with template arguments, or an expression in parentheses ((S > 1 ? seg : whole))
src = re.sub(r"([A-Za-z_][\w:]*(?:<[^<>;]*>)?|\([^()]*\))\s*<<<(.*?)>>>\(", launch, src, flags=re.S)
# NULL as nullptr: emu_launch deduces its arguments' types, and g++'s NULL (a long) converts to no pointer
src = re.sub(r"\bNULL\b", "nullptr", src)
sys.stdout.write(src)
