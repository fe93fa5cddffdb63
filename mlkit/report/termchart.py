"""A small line chart for the terminal, drawn as styled text (no curses, no rich).

Two modes:
- braille (for a colour terminal): each character cell holds 2 x 4 dots, one colour per series;
- markers (plain text, or no colour): one character per point, a different marker per series,
  so the series stay apart without colour.

`render_chart` returns lines of segments `(text, series_index | None)`; the CLI colours the
segments whose index is not None and prints the rest as it is. The x axis is labelled by its
kind: steps as integers, time (`x_label` 'seconds' or 'time') as wall time, `0:15` or `1:02:03`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

MARKERS = "*o+x#@%&"
_BRAILLE_BASE = 0x2800
# bit of the dot at (column 0..1, row 0..3) inside one braille cell
_BRAILLE_BITS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))

Segment = tuple[str, "int | None"]


@dataclass
class Series:
    """One curve: a label for the legend and its (x, y) points, in drawing order."""

    label: str
    points: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class Chart:
    """A drawn chart: styled lines, plus the ranges it shows."""

    lines: list[list[Segment]]
    x_range: tuple[float, float] | None
    y_range: tuple[float, float] | None
    drawn: int  # series with at least one finite point

    def plain(self) -> str:
        """The chart as plain text, one line per row."""
        return "\n".join("".join(text for text, _ in line) for line in self.lines)


def marker(index: int) -> str:
    """The plain-text marker of series `index`."""
    return MARKERS[index % len(MARKERS)]


def format_number(value: float) -> str:
    """A short label for an axis value: 4 significant digits, no trailing noise."""
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.3e}"
    text = f"{value:.4g}"
    return text


TIME_AXES = ("seconds", "time")


def format_step(value: float) -> str:
    """A step on the x axis: a whole number (120000, not 1.200e+05); other values as numbers."""
    return str(int(value)) if float(value).is_integer() else format_number(value)


def format_clock(seconds: float, span: float | None = None) -> str:
    """Seconds as wall time: '0:15', '12:05', '1:02:03'; tenths ('0:01.5') when `span` < 10 s."""
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    if span is not None and span < 10:
        minutes, rest = divmod(round(seconds, 1), 60)
        return f"{sign}{int(minutes)}:{rest:04.1f}"
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{sign}{hours}:{minutes:02d}:{secs:02d}"
    return f"{sign}{minutes}:{secs:02d}"


def _finite_points(series: Series) -> list[tuple[float, float]]:
    return [(x, y) for x, y in series.points if math.isfinite(x) and math.isfinite(y)]


def _expand(lo: float, hi: float) -> tuple[float, float]:
    """A non-empty range around a single value."""
    if hi > lo:
        return lo, hi
    pad = abs(lo) * 0.05 or 1.0
    return lo - pad, hi + pad


def _line(x0: int, y0: int, x1: int, y1: int) -> list[tuple[int, int]]:
    """The grid cells from (x0, y0) to (x1, y1), Bresenham's algorithm."""
    cells = []
    dx, dy = abs(x1 - x0), -abs(y1 - y0)
    sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
    error = dx + dy
    while True:
        cells.append((x0, y0))
        if x0 == x1 and y0 == y1:
            return cells
        e2 = 2 * error
        if e2 >= dy:
            error += dy
            x0 += sx
        if e2 <= dx:
            error += dx
            y0 += sy


def _plot(
    grids: list[list[tuple[int, int]]], width: int, height: int, braille: bool
) -> tuple[list[list[int]], list[list[int | None]]]:
    """Each series' points (grid cells, in order) joined by lines: (braille dots per cell, the
    index of the series that drew each cell last, None where none did)."""
    bits = [[0] * width for _ in range(height)]  # braille dots per cell
    owner: list[list[int | None]] = [[None] * width for _ in range(height)]
    for index, grid in enumerate(grids):
        path = grid[:1]
        for a, b in zip(grid, grid[1:], strict=False):
            path.extend(_line(*a, *b)[1:])
        for gx, gy in path:
            if braille:
                cx, cy = gx // 2, gy // 4
                bits[cy][cx] |= _BRAILLE_BITS[gx % 2][gy % 4]
            else:
                cx, cy = gx, gy
            owner[cy][cx] = index
    return bits, owner


def _plot_row(axis: str, bits: list[int], owner: list[int | None], braille: bool) -> list[Segment]:
    """One row of the plot after its axis label, runs of cells of the same series in one segment."""
    line: list[Segment] = [(axis, None)]
    for c, who in enumerate(owner):
        if who is None:
            char = " "
        elif braille:
            char = chr(_BRAILLE_BASE + bits[c])
        else:
            char = marker(who)
        if line[-1][1] == who and len(line) > 1:
            line[-1] = (line[-1][0] + char, who)
        else:
            line.append((char, who))
    return line


def render_chart(
    series: list[Series],
    *,
    width: int = 60,
    height: int = 12,
    braille: bool = False,
    title: str | None = None,
    x_label: str = "step",
) -> Chart:
    """Draw `series` into a `width` x `height` plot area with axes and a legend.

    NaN and infinite values are skipped. A series with one point is drawn as one dot. `x_label`
    'step' labels the x axis with whole steps; 'seconds' or 'time' with wall time ('(time)').
    """
    width, height = max(width, 8), max(height, 3)
    finite = [_finite_points(s) for s in series]
    xs = [x for pts in finite for x, _ in pts]
    ys = [y for pts in finite for _, y in pts]
    lines: list[list[Segment]] = []
    if title:
        lines.append([(title, None)])
    drawn = sum(1 for pts in finite if pts)
    if not xs:
        lines.append([("(no finite values to draw)", None)])
        return Chart(lines, None, None, 0)
    x_lo, x_hi = _expand(min(xs), max(xs))
    y_lo, y_hi = _expand(min(ys), max(ys))
    cols, rows = (width * 2, height * 4) if braille else (width, height)

    def to_grid(x: float, y: float) -> tuple[int, int]:
        gx = round((x - x_lo) / (x_hi - x_lo) * (cols - 1))
        gy = round((y_hi - y) / (y_hi - y_lo) * (rows - 1))
        return gx, gy

    bits, owner = _plot([[to_grid(x, y) for x, y in pts] for pts in finite], width, height, braille)

    top, mid, bottom = format_number(y_hi), format_number((y_lo + y_hi) / 2), format_number(y_lo)
    pad = max(len(top), len(mid), len(bottom))
    axis_v, axis_tick, corner, axis_h = ("│", "┤", "└", "─") if braille else ("|", "+", "+", "-")
    for r in range(height):
        label = top if r == 0 else bottom if r == height - 1 else mid if r == height // 2 else ""
        tick = axis_tick if label else axis_v
        lines.append(_plot_row(f"{label:>{pad}} {tick}", bits[r], owner[r], braille))
    lines.append([(" " * pad + " " + corner + axis_h * width, None)])
    is_time, span = x_label in TIME_AXES, max(xs) - min(xs)

    def x_text(x: float) -> str:
        if is_time:
            return format_clock(x, span)
        return format_step(x) if x_label == "step" else format_number(x)

    if min(xs) < max(xs):
        left, right = x_text(min(xs)), x_text(max(xs))
        gap = max(1, width - len(left) - len(right))
        x_axis = left + " " * gap + right
    else:  # one x value: it sits in the middle
        x_axis = x_text(xs[0]).center(width).rstrip()
    lines.append([(" " * (pad + 2) + x_axis + f"  ({'time' if is_time else x_label})", None)])
    legend: list[Segment] = [(" " * (pad + 2), None)]
    for index, s in enumerate(series):
        symbol = "⣿⣿" if braille else marker(index)
        legend.append((symbol, index))
        suffix = "" if finite[index] else " (no values)"
        legend.append((f" {s.label}{suffix}   ", None))
    lines.append(legend)
    return Chart(lines, (x_lo, x_hi), (y_lo, y_hi), drawn)
