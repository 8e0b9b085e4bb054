"""Hand-drawn SVG charts for the HTML report: step curves, heatmaps, scatter and grouped bars.

Drawn in Python rather than by an inlined charting library: the page stays small and
readable without JavaScript (the charts are plain markup, so they print, archive and
render with scripts blocked), there is no vendored code to keep current, and the four
chart kinds the report needs are a few hundred lines. Hover details are SVG ``<title>``s.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
DASHES = ("", "6 3", "2 2", "8 3 2 3")
WIDTH, HEIGHT = 420, 260
LEFT, RIGHT, TOP, BOTTOM = 54, 12, 26, 46

esc = html.escape


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def dash(index: int) -> str:
    return DASHES[(index // len(PALETTE)) % len(DASHES)]


def fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:.4g}"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (1, 2, 5 × a power of ten apart)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0]
    if low == high:
        low, high = low - (abs(low) or 1) * 0.5, high + (abs(high) or 1) * 0.5
    raw = (high - low) / max(1, count - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    start = math.floor(low / step) * step
    ticks: list[float] = []
    value = start
    while value <= high + step * 0.5 and len(ticks) < 20:
        ticks.append(round(value, 12))
        value += step
    return ticks


@dataclass(frozen=True)
class Series:
    label: str
    points: tuple[tuple[float, float], ...]
    index: int = 0  # colour and dash


class _Frame:
    """Axes with linear (or log-x) scales and the SVG around them."""

    def __init__(
        self,
        kind: str,
        metric: str,
        title: str,
        xs: Sequence[float],
        ys: Sequence[float],
        log_x: bool = False,
        x_label: str = "",
        y_label: str = "",
        width: int = WIDTH,
    ):
        self.kind, self.metric, self.title, self.log_x = kind, metric, title, log_x
        self.width = width
        self.x_label, self.y_label = x_label, y_label
        tx = [math.log10(x) for x in xs] if log_x else list(xs)
        self.xticks = nice_ticks(min(tx), max(tx)) if tx else [0.0, 1.0]
        self.yticks = nice_ticks(min(ys), max(ys)) if ys else [0.0, 1.0]
        self.x0, self.x1 = min(self.xticks[0], *tx) if tx else 0, max(self.xticks[-1], *tx) if tx else 1
        self.y0, self.y1 = min(self.yticks[0], *ys) if ys else 0, max(self.yticks[-1], *ys) if ys else 1
        if self.x0 == self.x1:
            self.x0, self.x1 = self.x0 - 1, self.x1 + 1
        if self.y0 == self.y1:
            self.y0, self.y1 = self.y0 - 1, self.y1 + 1
        self.pw, self.ph = width - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(self, value: float) -> float:
        v = math.log10(value) if self.log_x else value
        return LEFT + (v - self.x0) / (self.x1 - self.x0) * self.pw

    def y(self, value: float) -> float:
        return TOP + self.ph - (value - self.y0) / (self.y1 - self.y0) * self.ph

    def open(self) -> list[str]:
        parts = [
            _svg_open(self.kind, self.metric, self.title, self.width),
            f'<line class="axis" x1="{LEFT}" y1="{TOP + self.ph}" x2="{LEFT + self.pw}" y2="{TOP + self.ph}"/>',
            f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + self.ph}"/>',
        ]
        for t in self.yticks:
            if self.y0 <= t <= self.y1:
                y = self.y(t)
                parts.append(
                    f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + self.pw}" y2="{y:.1f}"/>'
                    f'<text class="tick" x="{LEFT - 4}" y="{y + 3:.1f}" text-anchor="end">{fmt(t)}</text>'
                )
        for t in self.xticks:
            value = 10**t if self.log_x else t
            if self.x0 <= t <= self.x1:
                x = LEFT + (t - self.x0) / (self.x1 - self.x0) * self.pw
                parts.append(
                    f'<text class="tick" x="{x:.1f}" y="{TOP + self.ph + 13}" text-anchor="middle">{fmt(value)}</text>'
                )
        if self.x_label:
            parts.append(
                f'<text class="label" x="{LEFT + self.pw / 2:.0f}" y="{HEIGHT - 8}" text-anchor="middle">'
                f"{esc(self.x_label)}{' (log)' if self.log_x else ''}</text>"
            )
        return parts


def _svg_open(kind: str, metric: str, title: str, width: int, height: int = HEIGHT) -> str:
    return (
        f'<svg class="chart" data-kind="{kind}" data-metric="{esc(metric)}" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{esc(title)}"><text class="title" x="8" y="16">{esc(title)}</text>'
    )


def curves(metric: str, title: str, series: Sequence[Series]) -> str:
    """One line per series over its steps (a curve of one point is a dot)."""
    xs = [p[0] for s in series for p in s.points]
    ys = [p[1] for s in series for p in s.points]
    frame = _Frame("curve", metric, title, xs, ys, x_label="step")
    parts = frame.open()
    for s in series:
        stroke = colour(s.index)
        pts = " ".join(f"{frame.x(x):.1f},{frame.y(y):.1f}" for x, y in s.points)
        dashed = f' stroke-dasharray="{dash(s.index)}"' if dash(s.index) else ""
        if len(s.points) > 1:
            parts.append(
                f'<polyline class="series" data-series="{esc(s.label)}" points="{pts}" fill="none" '
                f'stroke="{stroke}" stroke-width="1.6"{dashed}><title>{esc(s.label)}</title></polyline>'
            )
        else:
            x, y = s.points[0]
            parts.append(
                f'<circle class="series" data-series="{esc(s.label)}" cx="{frame.x(x):.1f}" '
                f'cy="{frame.y(y):.1f}" r="3" fill="{stroke}"><title>{esc(s.label)}</title></circle>'
            )
    parts.append("</svg>")
    return "".join(parts)


def scatter(metric: str, title: str, x_label: str, series: Sequence[Series]) -> str:
    """Last values against one numeric parameter, one colour per target; targets are
    nudged apart sideways so equal points never hide each other."""
    xs = [p[0] for s in series for p in s.points]
    ys = [p[1] for s in series for p in s.points]
    log_x = bool(xs) and min(xs) > 0 and max(xs) / min(xs) >= 100
    frame = _Frame("scatter", metric, title, xs, ys, log_x=log_x, x_label=x_label)
    parts = frame.open()
    n = len(series)
    for k, s in enumerate(series):
        nudge = (k - (n - 1) / 2) * 7
        stroke = colour(s.index)
        ordered = sorted(s.points)
        if len(ordered) > 1:
            pts = " ".join(f"{frame.x(x) + nudge:.1f},{frame.y(y):.1f}" for x, y in ordered)
            parts.append(f'<polyline points="{pts}" fill="none" stroke="{stroke}" stroke-opacity="0.35"/>')
        for x, y in ordered:
            parts.append(
                f'<circle class="point" data-series="{esc(s.label)}" cx="{frame.x(x) + nudge:.1f}" '
                f'cy="{frame.y(y):.1f}" r="4" fill="{stroke}"><title>{esc(s.label)} · {esc(x_label)}='
                f"{fmt(x)}: {fmt(y)}</title></circle>"
            )
    parts.append("</svg>")
    return "".join(parts)


def bars(
    metric: str,
    title: str,
    groups: Sequence[str],
    series: Sequence[tuple[str, int, dict[str, float]]],
    x_label: str = "",
) -> str:
    """Grouped bars: one group per parameter value (or set), one bar per target side by side."""
    values = [v for _, _, by in series for v in by.values()]
    low = min(0.0, *values) if values else 0.0
    high = max(0.0, *values) if values else 1.0
    width = max(WIDTH, min(1300, LEFT + RIGHT + len(groups) * max(18, 10 * len(series) + 8)))
    frame = _Frame("bars", metric, title, [], [low, high], x_label="", width=width)
    parts = frame.open()[:3]  # no numeric x ticks
    for t in frame.yticks:
        if frame.y0 <= t <= frame.y1:
            y = frame.y(t)
            parts.append(
                f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + frame.pw}" y2="{y:.1f}"/>'
                f'<text class="tick" x="{LEFT - 4}" y="{y + 3:.1f}" text-anchor="end">{fmt(t)}</text>'
            )
    slot = frame.pw / max(1, len(groups))
    bar = min(28.0, (slot - 6) / max(1, len(series)))
    base = frame.y(0.0)
    for g, group in enumerate(groups):
        start = LEFT + g * slot + (slot - bar * len(series)) / 2
        for k, (label, index, by) in enumerate(series):
            if group not in by:
                continue
            y = frame.y(by[group])
            top, h = min(y, base), max(1.0, abs(base - y))
            parts.append(
                f'<rect class="bar" data-series="{esc(label)}" x="{start + k * bar:.1f}" y="{top:.1f}" '
                f'width="{max(1.0, bar - 1):.1f}" height="{h:.1f}" fill="{colour(index)}">'
                f"<title>{esc(label)} · {esc(group)}: {fmt(by[group])}</title></rect>"
            )
        short = group if len(group) <= 16 else group[:15] + "…"
        cx = LEFT + g * slot + slot / 2
        parts.append(
            f'<text class="tick" x="{cx:.1f}" y="{TOP + frame.ph + 13}" text-anchor="middle">'
            f"{esc(short)}<title>{esc(group)}</title></text>"
        )
    if x_label:
        parts.append(
            f'<text class="label" x="{LEFT + frame.pw / 2:.0f}" y="{HEIGHT - 8}" text-anchor="middle">'
            f"{esc(x_label)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _heat(t: float) -> str:
    """A light-to-dark blue ramp (readable in print and for red-green colour blindness)."""
    t = min(1.0, max(0.0, t))
    r, g, b = (int(247 - (247 - 8) * t), int(251 - (251 - 69) * t), int(255 - (255 - 148) * t))
    return f"#{r:02x}{g:02x}{b:02x}"


def heatmap(
    metric: str,
    title: str,
    x_name: str,
    y_name: str,
    xs: Sequence[str],
    ys: Sequence[str],
    values: dict[tuple[str, str], float],
    low: float,
    high: float,
) -> str:
    """A two-parameter grid: one cell per (x, y) coloured by the metric's last value."""
    cw = max(34, min(70, 300 // max(1, len(xs))))
    ch = max(20, min(40, 180 // max(1, len(ys))))
    left, top = 70, 40
    width, height = left + cw * len(xs) + 12, top + ch * len(ys) + 40
    parts = [_svg_open("heatmap", metric, title, width, height)]
    span = (high - low) or 1.0
    for j, yv in enumerate(ys):
        parts.append(
            f'<text class="tick" x="{left - 4}" y="{top + j * ch + ch / 2 + 3:.0f}" text-anchor="end">'
            f"{esc(yv[:10])}</text>"
        )
        for i, xv in enumerate(xs):
            value = values.get((xv, yv))
            x, y = left + i * cw, top + j * ch
            if value is None:
                parts.append(f'<rect class="heat empty" x="{x}" y="{y}" width="{cw - 1}" height="{ch - 1}"/>')
                continue
            t = (value - low) / span
            text_fill = "#fff" if t > 0.55 else "#111"
            parts.append(
                f'<rect class="heat" x="{x}" y="{y}" width="{cw - 1}" height="{ch - 1}" fill="{_heat(t)}">'
                f"<title>{esc(x_name)}={esc(xv)}, {esc(y_name)}={esc(yv)}: {fmt(value)}</title></rect>"
                f'<text class="cellv" x="{x + cw / 2:.0f}" y="{y + ch / 2 + 3:.0f}" text-anchor="middle" '
                f'fill="{text_fill}">{fmt(value)}</text>'
            )
    for i, xv in enumerate(xs):
        parts.append(
            f'<text class="tick" x="{left + i * cw + cw / 2:.0f}" y="{top + len(ys) * ch + 13}" '
            f'text-anchor="middle">{esc(xv[:10])}</text>'
        )
    parts.append(
        f'<text class="label" x="{left + cw * len(xs) / 2:.0f}" y="{height - 8}" text-anchor="middle">'
        f"{esc(x_name)}</text>"
        f'<text class="label" x="{left - 4}" y="{top - 5}" text-anchor="end">{esc(y_name)}</text></svg>'
    )
    return "".join(parts)
