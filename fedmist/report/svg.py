"""Small SVG plot primitives for the HTML report: pure functions, data in, SVG text out.

No matplotlib: the figures are inline vector graphics a reader can zoom, and the report stays one
self-contained file. Axes are linear or logarithmic (decade ticks ``1e-3, 1e-2, ...`` with
unlabelled minor ticks at 2..9 × each decade). Values a log axis cannot show (0, negative) are
drawn at its lower edge; NaN breaks a line. Every text is escaped.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

# tab20-like palette, dark shades first: distinct for up to 20 series (the audit has ~15 attacks).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
           "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5")
SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
FONT = "font-family:system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif"


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


@dataclass(frozen=True)
class Axis:
    """One axis: its label, range and scale. ``log`` axes need ``0 < lo < hi``."""

    label: str
    lo: float
    hi: float
    log: bool = False
    integer: bool = False  # linear ticks on whole numbers only (epochs)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lo) and math.isfinite(self.hi) and self.lo < self.hi):
            raise ValueError(f"axis {self.label!r}: need finite lo < hi, got {self.lo}, {self.hi}")
        if self.log and self.lo <= 0:
            raise ValueError(f"log axis {self.label!r}: need lo > 0, got {self.lo}")

    def fraction(self, v: float) -> float:
        """Where ``v`` lies between lo (0) and hi (1); clamped to [0, 1], NaN stays NaN."""
        if math.isnan(v):
            return math.nan
        if self.log:
            if v <= 0:
                return 0.0
            f = (math.log10(v) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        else:
            f = (v - self.lo) / (self.hi - self.lo)
        return min(1.0, max(0.0, f))

    def ticks(self) -> tuple[list[float], list[float]]:
        """(labelled major ticks, unlabelled minor ticks)."""
        if self.log:
            return log_ticks(self.lo, self.hi)
        ticks = linear_ticks(self.lo, self.hi)
        if self.integer:
            whole = [t for t in ticks if float(t).is_integer()]
            ticks = whole if len(whole) >= 2 else sorted({float(math.ceil(self.lo)), float(math.floor(self.hi))})
        return ticks, []


@dataclass(frozen=True)
class Series:
    """A line (or markers) of ``(x, y)`` points, named in the legend."""

    name: str
    x: Sequence[float]
    y: Sequence[float]
    color: str = ""
    dashed: bool = False
    markers: bool = False
    note: str = ""  # hover text (SVG <title>) besides the name


@dataclass(frozen=True)
class Point:
    """One labelled point of a scatter plot."""

    label: str
    x: float
    y: float
    color: str = ""
    hollow: bool = False
    note: str = ""


@dataclass(frozen=True)
class Layout:
    width: int = 560
    height: int = 380
    left: int = 64
    right: int = 16
    top: int = 34
    bottom: int = 48
    legend_width: int = 0  # > 0: a legend column right of the plot

    @property
    def plot_w(self) -> float:
        return self.width - self.left - self.right - self.legend_width

    @property
    def plot_h(self) -> float:
        return self.height - self.top - self.bottom


# --- ticks ---------------------------------------------------------------------------------------
def log_ticks(lo: float, hi: float) -> tuple[list[float], list[float]]:
    """Decades within [lo, hi] and the 2..9 multiples between them.

    >>> log_ticks(1e-3, 1.0)[0]
    [0.001, 0.01, 0.1, 1.0]
    >>> len(log_ticks(1e-3, 1.0)[1])
    24
    """
    k0, k1 = math.floor(math.log10(lo) + 1e-9), math.ceil(math.log10(hi) - 1e-9)
    eps = 1e-9
    major = [10.0 ** k for k in range(k0, k1 + 1) if lo * (1 - eps) <= 10.0 ** k <= hi * (1 + eps)]
    minor = [m * 10.0 ** k for k in range(k0, k1 + 1) for m in range(2, 10) if lo < m * 10.0 ** k < hi]
    return [float(f"{v:.12g}") for v in major], [float(f"{v:.12g}") for v in minor]


def linear_ticks(lo: float, hi: float, target: int = 6) -> list[float]:
    """Round ticks (steps of 1, 2 or 5 × 10^k) within [lo, hi].

    >>> linear_ticks(0, 1)
    [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    """
    raw = (hi - lo) / max(1, target - 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 5, 10) if s * mag >= raw * 0.999)
    start = math.ceil(lo / step - 1e-9)
    ticks = []
    k = start
    while k * step <= hi + 1e-9 * step:
        ticks.append(float(f"{k * step:.12g}"))
        k += 1
    return ticks


def tick_label(v: float, log: bool) -> str:
    """``0.001`` .. ``10000`` as plain numbers, further decades as ``10⁻⁵``.

    >>> tick_label(1e-3, True), tick_label(1e-5, True), tick_label(0.4, False), tick_label(1e6, True)
    ('0.001', '10⁻⁵', '0.4', '10⁶')
    """
    if log:
        k = round(math.log10(v))
        if abs(v - 10.0 ** k) <= 1e-9 * v and not -3 <= k <= 4:
            return "10" + str(k).translate(SUPERSCRIPT)
    return f"{v:g}"


def decade_floor(v: float) -> float:
    """The largest power of ten <= ``v`` (> 0).

    >>> decade_floor(0.004), decade_floor(1e-3)
    (0.001, 0.001)
    """
    return 10.0 ** math.floor(math.log10(v) + 1e-9)


def decade_ceil(v: float) -> float:
    """The smallest power of ten >= ``v`` (> 0).

    >>> decade_ceil(250.0), decade_ceil(100.0)
    (1000.0, 100.0)
    """
    return 10.0 ** math.ceil(math.log10(v) - 1e-9)


# --- drawing -------------------------------------------------------------------------------------
def _n(v: float) -> str:
    """A coordinate with 0.1 px precision."""
    return f"{v:.1f}".rstrip("0").rstrip(".") if not math.isnan(v) else "0"


def _px(layout: Layout, x: Axis, y: Axis, xv: float, yv: float) -> tuple[float, float]:
    return (layout.left + x.fraction(xv) * layout.plot_w, layout.top + (1 - y.fraction(yv)) * layout.plot_h)


def _open(layout: Layout, title: str, kind: str) -> list[str]:
    t = escape(title)
    return [f'<svg class="figure" data-figure="{escape(kind)}" viewBox="0 0 {layout.width} {layout.height}" '
            f'width="{layout.width}" height="{layout.height}" role="img" aria-label="{t}" '
            f'style="{FONT};font-size:11px;max-width:100%;height:auto">',
            f"<title>{t}</title>",
            f'<rect x="0" y="0" width="{layout.width}" height="{layout.height}" fill="#fff"/>',
            f'<text x="{_n(layout.left + layout.plot_w / 2)}" y="18" text-anchor="middle" '
            f'font-size="13" font-weight="600">{t}</text>']


def _axes(layout: Layout, x: Axis | None, y: Axis) -> list[str]:
    """Frame, grid, ticks and labels; ``x`` None for a categorical x axis (bars draw their own)."""
    L, T, W, H = layout.left, layout.top, layout.plot_w, layout.plot_h
    out = [f'<g class="axes" stroke="#000" stroke-width="1" fill="none">'
           f'<rect x="{_n(L)}" y="{_n(T)}" width="{_n(W)}" height="{_n(H)}"/></g>']
    parts: list[str] = []
    for axis, horizontal in ((x, True), (y, False)):
        if axis is None:
            continue
        major, minor = axis.ticks()
        for v, is_major in [(v, True) for v in major] + [(v, False) for v in minor]:
            f = axis.fraction(v)
            size = 5 if is_major else 3
            grid = "#ddd" if is_major else "#f0f0f0"
            if horizontal:
                px = L + f * W
                parts.append(f'<line x1="{_n(px)}" y1="{_n(T)}" x2="{_n(px)}" y2="{_n(T + H)}" stroke="{grid}"/>')
                parts.append(f'<line x1="{_n(px)}" y1="{_n(T + H)}" x2="{_n(px)}" y2="{_n(T + H + size)}" '
                             f'stroke="#000"/>')
                if is_major:
                    parts.append(f'<text x="{_n(px)}" y="{_n(T + H + 17)}" text-anchor="middle">'
                                 f"{escape(tick_label(v, axis.log))}</text>")
            else:
                py = T + (1 - f) * H
                parts.append(f'<line x1="{_n(L)}" y1="{_n(py)}" x2="{_n(L + W)}" y2="{_n(py)}" stroke="{grid}"/>')
                parts.append(f'<line x1="{_n(L - size)}" y1="{_n(py)}" x2="{_n(L)}" y2="{_n(py)}" stroke="#000"/>')
                if is_major:
                    parts.append(f'<text x="{_n(L - 8)}" y="{_n(py + 4)}" text-anchor="end">'
                                 f"{escape(tick_label(v, axis.log))}</text>")
    out.insert(0, '<g class="ticks">' + "".join(parts) + "</g>")
    if x is not None:
        out.append(f'<text x="{_n(L + W / 2)}" y="{_n(layout.height - 10)}" text-anchor="middle">'
                   f"{escape(x.label)}</text>")
    out.append(f'<text transform="translate(14,{_n(T + H / 2)}) rotate(-90)" text-anchor="middle">'
               f"{escape(y.label)}</text>")
    return out


def _legend(layout: Layout, entries: Sequence[tuple[str, str, bool]]) -> list[str]:
    """Legend column right of the plot: (name, colour, dashed) per entry."""
    if not entries or layout.legend_width <= 0:
        return []
    x0 = layout.width - layout.legend_width + 6
    out = ['<g class="legend">']
    for i, (name, col, dashed) in enumerate(entries):
        y = layout.top + 8 + 16 * i
        dash = ' stroke-dasharray="5 3"' if dashed else ""
        out.append(f'<line x1="{_n(x0)}" y1="{_n(y)}" x2="{_n(x0 + 18)}" y2="{_n(y)}" stroke="{col}" '
                   f'stroke-width="2"{dash}/><text x="{_n(x0 + 24)}" y="{_n(y + 4)}">{escape(name)}</text>')
    out.append("</g>")
    return out


def _thin(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Drop points that repeat the previous pixel or lie on the straight line through their neighbours
    (a ROC of 2,000 examples becomes a few hundred points; what is drawn does not change)."""
    out: list[tuple[float, float]] = []
    for p in points:
        p = (round(p[0], 1), round(p[1], 1))
        if out and p == out[-1]:
            continue
        if len(out) >= 2:
            (ax, ay), (bx, by) = out[-2], out[-1]
            if abs((bx - ax) * (p[1] - ay) - (by - ay) * (p[0] - ax)) < 0.05 and \
                    min(ax, p[0]) <= bx <= max(ax, p[0]) and min(ay, p[1]) <= by <= max(ay, p[1]):
                out[-1] = p
                continue
        out.append(p)
    return out


def _path(layout: Layout, x: Axis, y: Axis, xs: Sequence[float], ys: Sequence[float]) -> str:
    """SVG path data; NaN in x or y starts a new segment."""
    segments: list[list[tuple[float, float]]] = [[]]
    for xv, yv in zip(xs, ys):
        xv, yv = float(xv), float(yv)
        if math.isnan(xv) or math.isnan(yv):
            if segments[-1]:
                segments.append([])
            continue
        segments[-1].append(_px(layout, x, y, xv, yv))
    d = []
    for seg in segments:
        seg = _thin(seg)
        if seg:
            d.append("M" + "L".join(f"{_n(a)},{_n(b)}" for a, b in seg))
    return "".join(d)


def line_chart(series: Sequence[Series], x: Axis, y: Axis, title: str, *, kind: str = "line",
               diagonal: bool = False, width: int = 560, height: int = 380, legend_width: int = 0) -> str:
    """Lines (with optional markers) on linear or log axes; ``diagonal``: the chance line y = x."""
    n_rows = len(series) + (1 if diagonal else 0)
    height = max(height, 34 + 16 * n_rows + 60) if legend_width else height
    layout = Layout(width=width + legend_width, height=height, legend_width=legend_width)
    out = _open(layout, title, kind) + _axes(layout, x, y)
    key = "|".join([kind, title, str(width), str(height), *(s.name for s in series)])
    clip = f"clip-{zlib.crc32(key.encode()):08x}"  # deterministic, distinct per figure of a page
    out.append(f'<clipPath id="{clip}"><rect x="{_n(layout.left)}" y="{_n(layout.top)}" '
               f'width="{_n(layout.plot_w)}" height="{_n(layout.plot_h)}"/></clipPath>')
    out.append(f'<g class="data" clip-path="url(#{clip})" fill="none" stroke-width="1.6">')
    entries = []
    if diagonal:
        lo, hi = max(x.lo, y.lo), min(x.hi, y.hi)
        xs = [lo * (hi / lo) ** (i / 50) for i in range(51)] if x.log or y.log else [lo, hi]
        out.append(f'<path class="chance" d="{_path(layout, x, y, xs, xs)}" stroke="#888" stroke-dasharray="4 3" '
                   f'stroke-width="1"><title>chance (TPR = FPR)</title></path>')
        entries.append(("chance", "#888", True))
    for i, s in enumerate(series):
        col = s.color or color(i)
        dash = ' stroke-dasharray="6 3"' if s.dashed else ""
        tip = escape(s.name + (f": {s.note}" if s.note else ""))
        out.append(f'<path class="series" data-series="{escape(s.name)}" d="{_path(layout, x, y, s.x, s.y)}" '
                   f'stroke="{col}"{dash}><title>{tip}</title></path>')
        if s.markers:
            for xv, yv in zip(s.x, s.y):
                if float(xv) == float(xv) and float(yv) == float(yv):
                    px, py = _px(layout, x, y, float(xv), float(yv))
                    out.append(f'<circle cx="{_n(px)}" cy="{_n(py)}" r="2.6" fill="{col}" stroke="none">'
                               f"<title>{escape(s.name)}: ({float(xv):g}, {float(yv):.4g})</title></circle>")
        entries.append((s.name, col, s.dashed))
    out.append("</g>")
    out += _legend(layout, entries)
    out.append("</svg>")
    return "".join(out)


def scatter_chart(points: Sequence[Point], x: Axis, y: Axis, title: str, *, kind: str = "scatter",
                  width: int = 620, height: int = 420, caption: str = "") -> str:
    """Labelled points; neighbours in x get their labels above / below in turn, so close points stay readable."""
    layout = Layout(width=width, height=height)
    out = _open(layout, title, kind) + _axes(layout, x, y)
    out.append('<g class="data">')
    order = sorted(range(len(points)), key=lambda i: points[i].x)
    for rank, i in enumerate(order):
        p = points[i]
        px, py = _px(layout, x, y, p.x, p.y)
        col = p.color or color(i)
        fill = "#fff" if p.hollow else col
        tip = escape(f"{p.label}: ({p.x:.4g}, {p.y:.4g})" + (f" {p.note}" if p.note else ""))
        out.append(f'<g class="point" data-label="{escape(p.label)}"><circle cx="{_n(px)}" cy="{_n(py)}" r="5" '
                   f'fill="{fill}" stroke="{col}" stroke-width="1.8"><title>{tip}</title></circle>'
                   f'<text x="{_n(px + 7)}" y="{_n(py - 6 if rank % 2 == 0 else py + 14)}">{escape(p.label)}</text></g>')
    out.append("</g>")
    if caption:
        out.append(f'<text x="{_n(layout.left + layout.plot_w)}" y="{_n(layout.top + 14)}" text-anchor="end" '
                   f'fill="#555">{escape(caption)}</text>')
    out.append("</svg>")
    return "".join(out)


def bar_chart(groups: Sequence[str], series: Sequence[tuple[str, Sequence[float]]], y: Axis, title: str, *,
              kind: str = "bars", width: int = 620, height: int = 380, legend_width: int = 130,
              reference: float | None = None) -> str:
    """Grouped bars (one group per x category, one bar per series) on a linear or log y axis; bars
    start at the axis's lower edge. ``reference``: a dashed horizontal line (e.g. PLR = 1)."""
    layout = Layout(width=width + legend_width, height=height, legend_width=legend_width)
    out = _open(layout, title, kind) + _axes(layout, None, y)
    gw = layout.plot_w / max(1, len(groups))
    bw = 0.8 * gw / max(1, len(series))
    out.append('<g class="data">')
    for g, name in enumerate(groups):
        out.append(f'<text x="{_n(layout.left + gw * (g + 0.5))}" y="{_n(layout.top + layout.plot_h + 17)}" '
                   f'text-anchor="middle">{escape(name)}</text>')
        for s, (sname, values) in enumerate(series):
            v = float(values[g])
            if math.isnan(v):
                continue
            top = layout.top + (1 - y.fraction(v)) * layout.plot_h
            x0 = layout.left + gw * g + 0.1 * gw + bw * s
            out.append(f'<rect class="bar" x="{_n(x0)}" y="{_n(top)}" width="{_n(bw)}" '
                       f'height="{_n(layout.top + layout.plot_h - top)}" fill="{color(s)}">'
                       f"<title>{escape(f'{sname}, {name}: {v:.4g}')}</title></rect>")
    if reference is not None:
        py = layout.top + (1 - y.fraction(reference)) * layout.plot_h
        out.append(f'<line x1="{_n(layout.left)}" y1="{_n(py)}" x2="{_n(layout.left + layout.plot_w)}" '
                   f'y2="{_n(py)}" stroke="#555" stroke-dasharray="4 3"/>')
    out.append("</g>")
    out += _legend(layout, [(name, color(s), False) for s, (name, _) in enumerate(series)])
    out.append("</svg>")
    return "".join(out)
