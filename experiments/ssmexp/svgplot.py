"""Line plots as SVG, with the standard library alone: axes, ticks, grid, a legend, linear or log scales.

    p = LinePlot("Validation loss", "training bytes", "bits per byte", logx=True)
    p.add("Mamba-1", xs, ys)
    p.add("Transformer", xs2, ys2, dashed=True)
    p.save("plot.svg")

Points whose x or y is None, NaN, infinite (or not positive on a log axis) are left out and break the line
there. Tick labels: `xfmt` / `yfmt` take a number and return its label; `si` (1k, 2M, 1G) and `pow2` (1K, 64K,
1M: powers of 1024) are provided.
"""
import math
from xml.sax.saxutils import escape

# Okabe-Ito, colour-blind safe (black last: it is also the axes' colour)
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
DASHES = ["", "6,4", "2,3", "8,3,2,3"]


def si(v):
    """1500 -> 1.5k, 2e6 -> 2M (decimal prefixes)."""
    if v == 0:
        return "0"
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return _trim(v / div) + suffix
    return _trim(v)


def pow2(v):
    """1024 -> 1K, 1048576 -> 1M (binary prefixes, as context lengths are written)."""
    for div, suffix in ((2**40, "T"), (2**30, "G"), (2**20, "M"), (2**10, "K")):
        if abs(v) >= div:
            return _trim(v / div) + suffix
    return _trim(v)


def _trim(v):
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    s = f"{v:.3g}"
    return s


def _finite(v):
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def nice_ticks(lo, hi, target=6):
    """Round tick values (1, 2 or 5 times a power of ten) covering [lo, hi]."""
    if hi <= lo:
        hi = lo + (abs(lo) if lo else 1.0)
    raw = (hi - lo) / max(1, target - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step + 1e-9) * step
    ticks, v = [], first
    while v <= hi + step * 1e-9:
        if v >= lo - step * 1e-9:
            ticks.append(round(v, 12))
        v += step
    return ticks, step


def log_ticks(lo, hi, base=10):
    """Powers of `base` inside [lo, hi]; within one decade, 1-2-5 multiples instead."""
    a, b = math.floor(math.log(lo, base) + 1e-9), math.ceil(math.log(hi, base) - 1e-9)
    ticks = [base**k for k in range(a, b + 1) if lo * (1 - 1e-9) <= base**k <= hi * (1 + 1e-9)]
    if len(ticks) >= 2:
        while len(ticks) > 9:  # too many decades: every other one
            ticks = ticks[::2]
        return ticks
    out = []
    for k in range(a - 1, b + 1):
        for m in (1, 2, 5):
            v = m * base**k
            if lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9):
                out.append(v)
    return out or [lo, hi]


class LinePlot:
    def __init__(self, title, xlabel, ylabel, logx=False, logy=False, width=760, height=460, xfmt=None, yfmt=None,
                 log_base_x=10, log_base_y=10, note=None, legend=None, xticks=None):
        self.title, self.xlabel, self.ylabel = title, xlabel, ylabel
        self.logx, self.logy, self.width, self.height = logx, logy, width, height
        self.xfmt, self.yfmt = xfmt or _trim, yfmt or _trim
        self.log_base_x, self.log_base_y = log_base_x, log_base_y
        self.xticks = xticks  # [(value, label)]: these ticks instead of the automatic ones (a categorical axis)
        self.note = note  # one line under the plot (e.g. the device and the date)
        self.legend = legend  # None: the emptiest corner inside the plot (outside, right, past 5 lines)
        self.series = []

    def add(self, label, xs, ys, dashed=False, markers=None, color=None):
        """A line through (xs[i], ys[i]); markers: None = when there are at most 40 points."""
        pts = list(zip(xs, ys))
        self.series.append({"label": label, "points": pts, "dashed": dashed, "markers": markers, "color": color})
        return self

    def _ok(self, x, y):
        return (_finite(x) and _finite(y) and (not self.logx or x > 0) and (not self.logy or y > 0))

    def svg(self):
        W, H = self.width, self.height
        left, right, top, bottom = 78, 24, 40, 62 + (18 if self.note else 0)
        lw = 30 + 7 * max((len(s["label"]) for s in self.series), default=0)
        outside = self.legend == "outside" or (self.legend is None and len(self.series) > 5)
        if outside:
            W += lw + 12
        pw, ph = self.width - left - right, H - top - bottom
        pts = [(x, y) for s in self.series for x, y in s["points"] if self._ok(x, y)]
        out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
               f'font-family="Helvetica, Arial, sans-serif" font-size="12">',
               f'<rect width="{W}" height="{H}" fill="white"/>',
               f'<text x="{W / 2:.1f}" y="22" text-anchor="middle" font-size="15" font-weight="bold">'
               f'{escape(self.title)}</text>']
        if not pts:
            out.append(f'<text x="{W / 2:.1f}" y="{H / 2:.1f}" text-anchor="middle" fill="#666">no data</text>')
            out.append("</svg>")
            return "\n".join(out) + "\n"
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        if self.xticks:
            xs = xs + [v for v, _ in self.xticks]
        xt, xmap = self._axis(min(xs), max(xs), self.logx, left, left + pw, self.log_base_x)
        labels = dict(self.xticks or ())
        if self.xticks:
            xt = [v for v, _ in self.xticks]
        yt, ymap = self._axis(min(ys), max(ys), self.logy, top + ph, top, self.log_base_y)
        # grid and ticks
        for v in xt:
            px = xmap(v)
            out.append(f'<line x1="{px:.1f}" y1="{top}" x2="{px:.1f}" y2="{top + ph}" stroke="#e5e5e5"/>')
            text = labels[v] if v in labels else self.xfmt(v)
            out.append(f'<text x="{px:.1f}" y="{top + ph + 16}" text-anchor="middle">{escape(text)}</text>')
        for v in yt:
            py = ymap(v)
            out.append(f'<line x1="{left}" y1="{py:.1f}" x2="{left + pw}" y2="{py:.1f}" stroke="#e5e5e5"/>')
            out.append(f'<text x="{left - 6}" y="{py + 4:.1f}" text-anchor="end">{escape(self.yfmt(v))}</text>')
        out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="black"/>')
        out.append(f'<text x="{left + pw / 2:.1f}" y="{top + ph + 38}" text-anchor="middle">{escape(self.xlabel)}'
                   f'{" (log scale)" if self.logx else ""}</text>')
        out.append(f'<text transform="translate(18,{top + ph / 2:.1f}) rotate(-90)" text-anchor="middle">'
                   f'{escape(self.ylabel)}{" (log scale)" if self.logy else ""}</text>')
        if self.note:
            out.append(f'<text x="{W / 2:.1f}" y="{H - 8}" text-anchor="middle" font-size="10" fill="#555">'
                       f'{escape(self.note)}</text>')
        # the lines, clipped to the plotting area
        segs_all = [(xmap(x), ymap(y)) for s in self.series for x, y in s["points"] if self._ok(x, y)]
        out.append(f'<clipPath id="area"><rect x="{left}" y="{top}" width="{pw}" height="{ph}"/></clipPath>')
        for i, s in enumerate(self.series):
            color = s["color"] or PALETTE[i % len(PALETTE)]
            dash = DASHES[(i // len(PALETTE) + (1 if s["dashed"] else 0)) % len(DASHES)]
            segs, cur = [], []
            for x, y in s["points"]:
                if self._ok(x, y):
                    cur.append((xmap(x), ymap(y)))
                elif cur:
                    segs.append(cur)
                    cur = []
            if cur:
                segs.append(cur)
            for seg in segs:
                d = " ".join(f"{px:.1f},{py:.1f}" for px, py in seg)
                out.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="2"'
                           f'{f" stroke-dasharray={chr(34)}{dash}{chr(34)}" if dash else ""} clip-path="url(#area)"/>')
            n = sum(len(seg) for seg in segs)
            if s["markers"] or (s["markers"] is None and n <= 40):
                for seg in segs:
                    for px, py in seg:
                        out.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{color}"/>')
        # legend: top right inside the plot, on a white box
        if self.series:
            lh = 8 + 18 * len(self.series)
            if outside:
                lx, ly = left + pw + 12, top
            else:
                lx, ly = self._legend_corner(segs_all, left, top, pw, ph, lw, lh)
            out.append(f'<rect x="{lx}" y="{ly}" width="{lw}" height="{lh}" fill="white" fill-opacity="0.85" '
                       f'stroke="#999"/>')
            for i, s in enumerate(self.series):
                color = s["color"] or PALETTE[i % len(PALETTE)]
                dash = DASHES[(i // len(PALETTE) + (1 if s["dashed"] else 0)) % len(DASHES)]
                yy = ly + 16 + 18 * i
                out.append(f'<line x1="{lx + 6}" y1="{yy - 4}" x2="{lx + 24}" y2="{yy - 4}" stroke="{color}" '
                           f'stroke-width="2"{f" stroke-dasharray={chr(34)}{dash}{chr(34)}" if dash else ""}/>')
                out.append(f'<text x="{lx + 28}" y="{yy}">{escape(s["label"])}</text>')
        out.append("</svg>")
        return "\n".join(out) + "\n"

    def _legend_corner(self, pts, left, top, pw, ph, lw, lh):
        """The legend's top-left corner: self.legend ('upper right', 'lower left', ...), or by default the corner
        whose box (with a margin) covers the fewest of the plotted points."""
        corners = {"upper right": (left + pw - lw - 8, top + 8), "upper left": (left + 8, top + 8),
                   "lower right": (left + pw - lw - 8, top + ph - lh - 8), "lower left": (left + 8, top + ph - lh - 8)}
        if self.legend in corners:
            return corners[self.legend]
        def covered(c):
            x0, y0 = c
            return sum(1 for px, py in pts if x0 - 12 <= px <= x0 + lw + 12 and y0 - 12 <= py <= y0 + lh + 12)
        return min(corners.values(), key=covered)  # ties: the first, upper right

    @staticmethod
    def _axis(lo, hi, log, p0, p1, base):
        """The ticks and a value -> pixel map from [lo, hi] (padded a little) onto [p0, p1]."""
        if log:
            if lo == hi:
                lo, hi = lo / base, hi * base
            ticks = log_ticks(lo, hi, base)
            a, b = math.log(min(lo, ticks[0])), math.log(max(hi, ticks[-1]))
            pad = 0.03 * (b - a)
            a, b = a - pad, b + pad
            return ticks, lambda v: p0 + (math.log(v) - a) / (b - a) * (p1 - p0)
        if lo == hi:
            lo, hi = lo - (abs(lo) * 0.1 or 1), hi + (abs(hi) * 0.1 or 1)
        span = hi - lo
        ticks, _ = nice_ticks(lo - 0.03 * span, hi + 0.03 * span)
        a, b = min(lo - 0.03 * span, ticks[0]), max(hi + 0.03 * span, ticks[-1])
        return ticks, lambda v: p0 + (v - a) / (b - a) * (p1 - p0)

    def save(self, path):
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.svg())
        return path
