"""The report's sweep section: for each sweep among the reported runs, its trials best first and a
parameter-vs-metric plot per swept parameter, drawn as inline SVG (no script needed to see it)."""

from __future__ import annotations

import html
import math
from typing import Any


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


W, H, PAD_L, PAD_R, PAD_T, PAD_B = 320, 200, 52, 12, 12, 34
PARENT_TAG = "mlflow.parentRunId"
METHOD_TAG = "mlkit.sweep.method"


def sweep_ids(runs: list[Any]) -> list[str]:
    """The sweeps the runs belong to (a sweep's parent, or a trial's parent), in first-seen order."""
    out: dict[str, None] = {}
    for run in runs:
        tags = run.data.tags
        if METHOD_TAG in tags and PARENT_TAG not in tags:
            out[run.info.run_id] = None
        elif tags.get(PARENT_TAG) and "mlkit.sweep.slot" in tags:
            out[tags[PARENT_TAG]] = None
    return list(out)


def _num(value: str) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def plot(param: str, metric: str, points: list[tuple[str, float, bool]]) -> str:
    """One SVG: `points` are (param value, metric, pruned); numbers on a linear or log x axis
    (log when they span more than two decades), anything else as categories."""
    maybe = [_num(p) for p, _, _ in points]
    nums = [n for n in maybe if n is not None]
    labels: list[str] = []
    log = False
    if len(nums) == len(points):
        log = min(nums) > 0 and max(nums) / min(nums) > 100
        xs = [math.log10(n) if log else n for n in nums]
    else:
        labels = sorted({p for p, _, _ in points})
        xs = [float(labels.index(p)) for p, _, _ in points]
    ys = [m for _, m, _ in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - 1, y1 + 1

    def sx(x: float) -> float:
        return PAD_L + (x - x0) / (x1 - x0) * (W - PAD_L - PAD_R)

    def sy(y: float) -> float:
        return H - PAD_B - (y - y0) / (y1 - y0) * (H - PAD_T - PAD_B)

    parts = [f'<svg class="sweep-plot" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" '
             f'aria-label="{esc(metric)} against {esc(param)}">',
             f'<line x1="{PAD_L}" y1="{H - PAD_B}" x2="{W - PAD_R}" y2="{H - PAD_B}" stroke="#888"/>',
             f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{H - PAD_B}" stroke="#888"/>']  # fmt: skip
    for y in (y0, y1):
        parts.append(
            f'<text x="{PAD_L - 4}" y="{sy(y) + 4:.1f}" text-anchor="end" font-size="10">{esc(_fmt(y))}</text>'
        )
    ticks = [(sx(float(i)), lab) for i, lab in enumerate(labels)] if labels else [
        (sx(x0), _fmt(10**x0 if log else x0)), (sx(x1), _fmt(10**x1 if log else x1))]  # fmt: skip
    for x, lab in ticks:
        parts.append(
            f'<text x="{x:.1f}" y="{H - PAD_B + 13}" text-anchor="middle" font-size="10">{esc(lab)}</text>'
        )
    axis = f"{param} (log)" if log else param
    parts.append(
        f'<text x="{(PAD_L + W - PAD_R) / 2:.0f}" y="{H - 4}" text-anchor="middle" font-size="11">{esc(axis)}</text>'
    )
    for x, (value, m, pruned) in zip(xs, points, strict=True):
        fill = "none" if pruned else "#1f77b4"
        parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(m):.1f}" r="4" fill="{fill}" stroke="#1f77b4">'
                     f"<title>{esc(param)}={esc(value)}: {esc(metric)}={esc(_fmt(m))}"
                     f"{' (pruned)' if pruned else ''}</title></circle>")  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def _section(table: Any) -> str:
    metric = table.metric or "metric"
    head = "".join(f"<th>{esc(c)}</th>" for c in ["trial", "status", metric, *table.params, "run"])
    rows = []
    for t in table.trials:
        value = "" if t.metric is None else _fmt(t.metric)
        cells = [str(t.slot), t.status, value, *(t.params.get(p, "") for p in table.params), t.run_id[:8]]
        rows.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    plots = []
    if table.metric:
        for param in table.params:
            points = [(t.params.get(param, ""), t.metric, t.status == "pruned") for t in table.trials
                      if t.metric is not None and t.status in ("FINISHED", "pruned")]  # fmt: skip
            if points:
                plots.append(f'<figure class="sweep-fig">{plot(param, metric, points)}</figure>')
    best = table.best()
    best_line = (
        f" · best {esc(metric)} {_fmt(best.metric)} (trial {best.slot})"
        if best and best.metric is not None
        else ""
    )
    arrow = "lowest" if table.direction == "minimize" else "highest"
    return (
        f'<h3 id="sweep-{esc(table.sweep_id)}">Sweep {esc(table.name)} <small>({esc(table.sweep_id[:8])})</small></h3>'
        f'<p class="meta">{esc(table.method)} · {len(table.trials)} of {table.planned} trials · '
        f"{esc(table.status)} · {esc(metric)} {arrow} first{best_line}</p>"
        f'<div class="sweep-plots">{"".join(plots)}</div>'
        f'<table class="sweep-trials"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def sweeps_html(store: Any, runs: list[Any]) -> str:
    """The sweep section for the reported runs ('' when none of them is part of a sweep)."""
    # import budget: the sweep results load only when a report has sweeps in it
    from mlkit.errors import MlkitError
    from mlkit.sweep.results import sweep_table

    sections = []
    for sweep_id in sweep_ids(runs):
        try:
            sections.append(_section(sweep_table(store, sweep_id)))
        except MlkitError:
            continue  # a parent that was deleted, or a run that only looks like a sweep
    if not sections:
        return ""
    return (
        '<h2 id="sweeps">Sweeps</h2><p class="note">Each point is a trial: the swept parameter against the '
        "trial's final metric (hollow: pruned).</p>" + "".join(sections)
    )
