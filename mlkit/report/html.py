"""`mlkit report`: one self-contained HTML file about an experiment's runs.

The file needs no network: CSS and JavaScript are inline, charts are drawn as inline SVG by the
page's own script from a JSON block, images are `data:` URIs. Every string from the store (run
names, params, tags, experiment names, artifact paths) is HTML-escaped, and the JSON block is
written so that no value can close its <script> element.

`collect_report(store, ...)` (in `mlkit.report.collect`) reads the store into a `ReportData`;
`render_html(data)` here is pure; `build_report(...)` does both and writes the file atomically.
"""

from __future__ import annotations

import html
import json
import math
import os
import stat
from datetime import datetime
from pathlib import Path

from mlkit import __version__, fsio
from mlkit.errors import UsageError
from mlkit.report.assets import CSS, JS
from mlkit.report.collect import (
    LOG_TAIL_LINES,
    MAX_ARTIFACTS_LISTED,
    ReportData,
    ReportImage,
    ReportOptions,
    ReportResult,
    ReportRun,
    changed_params,
    collect_report,
    natural_key,
    table_metrics,
)
from mlkit.report.compare import SYSTEM_PREFIX
from mlkit.tracking.entities import Run


def esc(value: object) -> str:
    """HTML-escape any value for text and attribute positions."""
    return html.escape("" if value is None else str(value), quote=True)


def script_json(obj: object) -> str:
    """JSON safe inside <script>: '<', '>', '&' and the JS line separators are \\u-escaped."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    for char, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    return text


def _time(ms: int | None) -> str:
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _duration(run: Run) -> float | None:
    info = run.info
    return (info.end_time - info.start_time) / 1000 if info.end_time and info.start_time else None


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _num(value: float | None) -> str:
    if value is None:
        return ""
    if not math.isfinite(value):
        return str(value)
    return f"{value:.6g}"


def _cell(text: object, sort: object = None, numeric: bool = False, cls: str = "") -> str:
    classes = " ".join(c for c in ("num" if numeric else "", cls) if c)
    attr = f' class="{classes}"' if classes else ""
    sort = text if sort is None else sort
    return f'<td{attr} data-v="{esc(sort)}">{esc(text)}</td>'


def _run_anchor(run_id: str) -> str:
    return f"run-{run_id}"


def _status_class(status: str) -> str:
    return status if status in ("FINISHED", "FAILED", "KILLED", "RUNNING", "SCHEDULED") else "OTHER"


def _runs_table(data: ReportData) -> str:
    """Fixed columns, the latest model metrics, then the params that differ across the runs, then
    (hidden until asked for) the params every run has alike."""
    runs = [r.run for r in data.runs]
    changed = changed_params(runs)
    same = [k for k in sorted({k for r in runs for k in r.data.params}, key=natural_key) if k not in changed]
    if len(runs) < 2:  # nothing to differ from: show them all
        changed, same = same, []
    metrics = table_metrics(runs)
    fixed = ["Run", "Run ID", "Status", "Start", "Duration"]
    head = [f'<th scope="col">{esc(name)}</th>' for name in fixed]
    head += [f'<th scope="col" class="group-metrics">{esc(k)}</th>' for k in metrics]
    head += [f'<th scope="col" class="group-params changed">{esc(k)}</th>' for k in changed]
    head += [f'<th scope="col" class="group-params same">{esc(k)}</th>' for k in same]
    body = []
    for report_run in data.runs:
        run, info = report_run.run, report_run.run.info
        duration = _duration(run)
        failure = run.data.tags.get("mlkit.failure_reason")
        reason = f' title="{esc(failure)}"' if failure else ""
        cells = [
            f'<td data-v="{esc(info.run_name)}"><span class="swatch" style="background:{esc(report_run.color)}">'
            f'</span><a href="#{esc(_run_anchor(info.run_id))}" class="run-link">{esc(info.run_name or info.run_id[:8])}</a></td>',
            f'<td data-v="{esc(info.run_id)}" title="{esc(info.run_id)}"><code>{esc(info.run_id[:8])}</code></td>',
            f'<td data-v="{esc(info.status)}"><span class="status status-{_status_class(info.status)}"{reason}>'
            f"{esc(info.status)}</span></td>",
            _cell(_time(info.start_time), info.start_time or ""),
            _cell(_fmt_duration(duration), "" if duration is None else duration, numeric=True),
        ]
        for key in metrics:
            value = run.data.metrics.get(key)
            sort = "" if value is None or not math.isfinite(value) else repr(value)
            cells.append(_cell(_num(value), sort, numeric=True))
        for key in changed:
            param = run.data.params.get(key)
            cells.append(_cell("" if param is None else param, numeric=_is_number(param)))
        for key in same:
            param = run.data.params.get(key)
            cells.append(_cell("" if param is None else param, numeric=_is_number(param), cls="same"))
        body.append(f'<tr data-run-id="{esc(info.run_id)}">{"".join(cells)}</tr>')
    toggle = ""
    if same:
        toggle = (
            f'<p class="note">Params that differ across these runs come first. '
            f'<button type="button" id="toggle-same" data-count="{len(same)}">'
            f"Show the {len(same)} param(s) all runs share</button></p>"
        )
    elif changed and len(runs) > 1:
        toggle = '<p class="note">Every param differs across these runs.</p>'
    return (
        f"{toggle}"
        '<div class="table-wrap"><table class="runs hide-same" id="runs-table">'
        f"<thead><tr>{''.join(head)}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def _is_number(value: str | None) -> bool:
    if value is None:
        return False
    try:
        float(value)
        return True
    except ValueError:
        return False


def _chart_boxes(data: ReportData, group: str) -> str:
    boxes = []
    for index, chart in enumerate(data.charts):
        if chart.group != group:
            continue
        name = chart.key[len(SYSTEM_PREFIX) :] if group == "system" else chart.key
        boxes.append(
            f'<div class="chart" id="chart-{index}" data-metric="{esc(chart.key)}">'
            f'<h3>{esc(name)}</h3><svg role="img" aria-label="{esc(chart.key)}"></svg></div>'
        )
    return (
        f'<div class="charts">{"".join(boxes)}</div>' if boxes else '<p class="note">No metrics logged.</p>'
    )


def _images_section(data: ReportData) -> str:
    parts = []
    names = {r.run.info.run_id: r.label for r in data.runs}
    by_run: dict[str, list[tuple[ReportImage, str]]] = {}
    for image, uri in data.images:
        by_run.setdefault(image.run_id, []).append((image, uri))
    for run_id, images in by_run.items():
        figures = "".join(
            f'<figure><img src="{esc(uri)}" alt="{esc(image.path)}">'
            f"<figcaption>{esc(image.path)} ({image.bytes} bytes)</figcaption></figure>"
            for image, uri in images
        )
        parts.append(f'<h3>{esc(names.get(run_id, run_id))}</h3><div class="images">{figures}</div>')
    if not parts:
        parts.append('<p class="note">No image artifacts (PNG, JPEG, GIF, WebP) in these runs.</p>')
    if data.skipped_images:
        items = "".join(
            f"<li>{esc(names.get(s.run_id, s.run_id))}: {esc(s.path)} ({s.bytes} bytes): {esc(s.reason)}</li>"
            for s in data.skipped_images
        )
        parts.append(
            f'<p class="note">{len(data.skipped_images)} image(s) not shown:</p><ul class="skipped">{items}</ul>'
        )
    return "".join(parts)


def _size(n: int | None) -> str:
    if n is None:
        return ""
    if n < 1024:
        return f"{n} B"
    size = n / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}"
        size /= 1024
    return ""


def _kv_table(rows: list[tuple[str, str, bool]], empty: str) -> str:
    """A key/value table; rows flagged True are marked (a param that differs across runs)."""
    if not rows:
        return f'<p class="note">{esc(empty)}</p>'
    body = "".join(
        f'<tr class="{"changed" if flag else "same"}"><th scope="row">{esc(k)}</th><td>{esc(v)}</td></tr>'
        for k, v, flag in rows
    )
    return f'<table class="kv">{body}</table>'


HIDDEN_TAGS = ("mlflow.log-model.history",)  # long JSON that the Models line says better
MAX_TAG_CHARS = 400


def _run_section(report_run: ReportRun, changed: set[str]) -> str:
    run, info, details = report_run.run, report_run.run.info, report_run.details
    duration = _duration(run)
    failure = run.data.tags.get("mlkit.failure_reason")
    facts = [
        f'<span class="status status-{_status_class(info.status)}">{esc(info.status)}</span>',
        f"id <code>{esc(info.run_id)}</code>",
        f"started {esc(_time(info.start_time))}" if info.start_time else "",
        f"ran {esc(_fmt_duration(duration))}" if duration is not None else "",
    ]
    parts = [f'<p class="meta">{" · ".join(f for f in facts if f)}</p>']
    if failure:
        parts.append(f'<p class="failure">Failed: {esc(failure)}</p>')
    if details is not None:
        models = [f"<li><code>{esc(uri)}</code></li>" for uri in details.model_uris]
        models += [f"<li>registered as <code>{esc(reg)}</code></li>" for reg in details.registered]
        parts.append(
            f'<h4>Model</h4><ul class="models">{"".join(models)}</ul>'
            if models
            else '<h4>Model</h4><p class="note">No model logged.</p>'
        )
    params = [
        (k, v, k in changed) for k, v in sorted(run.data.params.items(), key=lambda kv: natural_key(kv[0]))
    ]
    differ, alike = [p for p in params if p[2]], [p for p in params if not p[2]]
    if not differ:  # one run, or no param differs: nothing to fold away
        differ, alike = alike, []
    block = _kv_table(differ, "No params.")
    if alike:  # folded, as the table hides them: the ones that differ are what tells runs apart
        block += (
            f'<details class="same-params"><summary>{len(alike)} param(s) all runs share</summary>'
            f"{_kv_table(alike, '')}</details>"
        )
    parts.append(f"<h4>Params ({len(params)})</h4>" + block)
    tags = [
        (k, v if len(v) <= MAX_TAG_CHARS else v[:MAX_TAG_CHARS] + " …", False)
        for k, v in sorted(run.data.tags.items())
        if k not in HIDDEN_TAGS
    ]
    parts.append(f"<h4>Tags ({len(tags)})</h4>" + _kv_table(tags, "No tags."))
    if details is not None:
        more = f" (first {MAX_ARTIFACTS_LISTED})" if details.artifacts_more else ""
        items = "".join(
            f'<li><code>{esc(path)}</code> <span class="note">{esc(_size(size))}</span></li>'
            for path, size in details.artifacts
        )
        parts.append(
            f"<h4>Artifacts{more}</h4>"
            + (f'<ul class="artifacts">{items}</ul>' if items else '<p class="note">No artifacts.</p>')
        )
        if details.log_tail is not None:
            parts.append(
                f"<h4>Log tail (last {LOG_TAIL_LINES} lines of logs/output.log)</h4>"
                f'<pre class="log">{esc(details.log_tail)}</pre>'
            )
        else:
            parts.append(f'<h4>Log tail</h4><p class="note">{esc(details.log_note)}</p>')
    name = info.run_name or info.run_id[:8]
    return (
        f'<details class="run-detail" id="{esc(_run_anchor(info.run_id))}" data-run-id="{esc(info.run_id)}">'
        f'<summary><span class="swatch" style="background:{esc(report_run.color)}"></span>{esc(name)} '
        f'<code class="note">{esc(info.run_id[:8])}</code></summary>'
        f'<div class="run-body">{"".join(parts)}<p class="note"><a href="#runs">back to the runs table</a></p></div>'
        "</details>"
    )


def _run_sections(data: ReportData) -> str:
    changed = set(changed_params([r.run for r in data.runs]))
    return "".join(_run_section(r, changed) for r in data.runs)


def _controls(data: ReportData) -> str:
    axes = "".join(
        f'<option value="{axis}"{" selected" if axis == data.x_axis else ""}>{label}</option>'
        for axis, label in (("step", "step"), ("epoch", "epoch"), ("time", "time since start"))
        if axis != "epoch" or "epoch" in data.counters
    )
    checked = " checked" if data.log_y else ""
    return (
        '<div class="controls" id="controls">'
        f'<label>x axis <select id="x-axis">{axes}</select></label>'
        f'<label><input type="checkbox" id="log-y"{checked}> log scale (y)</label>'
        f'<label>smoothing <input type="range" id="smoothing" min="0" max="0.99" step="0.01" value="{data.smoothing:g}">'
        f' <output id="smoothing-value">{data.smoothing:g}</output></label>'
        "</div>"
    )


def _scatter_section(data: ReportData) -> str:
    runs = [r.run for r in data.runs]
    if len(runs) < 2:
        return '<p class="note">A scatter plot needs at least two runs.</p>'
    return (
        '<div class="controls" id="scatter-controls">'
        '<label>param <select id="scatter-param"></select></label>'
        '<label>metric <select id="scatter-metric"></select></label>'
        '<label><input type="checkbox" id="scatter-log-x"> log scale (x)</label>'
        "</div>"
        '<div class="chart scatter" id="scatter"><h3 id="scatter-title"></h3>'
        '<svg role="img" aria-label="parameter against metric"></svg></div>'
    )


def _payload(data: ReportData) -> dict[str, object]:
    runs = [r.run for r in data.runs]
    changed = changed_params(runs)
    final_metrics = table_metrics(runs)
    others = [
        k for k in sorted({k for r in runs for k in r.data.params}, key=natural_key) if k not in changed
    ]
    return {
        "runs": [
            {
                "id": r.run.info.run_id,
                "label": r.label,
                "color": r.color,
                "params": r.run.data.params,
                "metrics": {
                    k: v for k, v in r.run.data.metrics.items() if k in final_metrics and math.isfinite(v)
                },
            }
            for r in data.runs
        ],
        "params": changed + others,  # the scatter's choices, those that differ first
        "changed": changed,
        "metrics": final_metrics,
        "settings": {"x": data.x_axis, "logY": data.log_y, "smoothing": data.smoothing},
        "charts": [
            {
                "key": chart.key,
                "group": chart.group,
                "x": chart.x,
                "series": [
                    {
                        "run": one.run,
                        "step": one.steps,
                        "epoch": one.epochs,
                        "t": one.seconds,
                        "y": one.values,
                    }
                    for one in chart.series
                ],
            }
            for chart in data.charts
        ],
    }


def render_html(data: ReportData, sweeps: str = "") -> str:
    """The report page as one HTML document (pure: no I/O)."""
    shown = len(data.runs)
    scope = f"{shown} run(s)" + (f" of {data.runs_total}" if data.runs_total != shown else "")
    has_system = any(c.group == "system" for c in data.charts)
    system = (
        '<p class="note">Drawn against wall time since each run started.</p>' + _chart_boxes(data, "system")
        if has_system
        else '<p class="note">No system metrics (system/...) logged.</p>'
    )
    counters = (
        f'<p class="note">Not drawn as curves: {esc(", ".join(data.counters))} (they count progress; '
        "pick epoch as the x axis instead).</p>"
        if data.counters
        else ""
    )
    title = f"{data.experiment_name} — mlkit report"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>{esc(title)}</title>
<style>{CSS}</style>
</head>
<body>
<h1>Experiment {esc(data.experiment_name)}</h1>
<p class="meta">id {esc(data.experiment_id)} · {esc(scope)} · store {esc(data.store)}</p>
<p class="meta">generated {esc(data.generated)} by mlkit {esc(__version__)} · curves thinned to at most {data.max_points} points per run</p>
<nav class="toc"><a href="#runs">Runs</a> · <a href="#metrics">Metrics</a> · <a href="#scatter-section">Param vs metric</a> · <a href="#system">System metrics</a> · <a href="#images">Images</a> · <a href="#run-details">Each run</a></nav>
<h2 id="runs">Runs</h2>
<p class="note">Click a column header to sort; click again to reverse. Click a run's name for its params, tags, artifacts, log and model.</p>
{_runs_table(data)}
<h2 id="metrics">Metrics</h2>
<noscript><p class="note">The charts are drawn by the page's script; enable JavaScript to see them.</p></noscript>
{_controls(data)}
<div class="legend" id="legend"></div>
{counters}
{_chart_boxes(data, "metrics")}
<h2 id="scatter-section">Param vs metric</h2>
<p class="note">Each point is a run: a param's value against the metric's latest value.</p>
{_scatter_section(data)}
{sweeps}
<h2 id="system">System metrics</h2>
{system}
<h2 id="images">Images</h2>
{_images_section(data)}
<h2 id="run-details">Each run</h2>
{_run_sections(data)}
<script type="application/json" id="report-data">{script_json(_payload(data))}</script>
<script>{JS}</script>
</body>
</html>
"""


def _check_output(output: Path) -> None:
    """UsageError unless `output` is a regular file or nothing yet: the page is renamed over it,
    which would turn a link (`-o /dev/stdout`), a FIFO or a device (`-o /dev/null`, as root)
    into a regular file."""
    try:
        mode = os.lstat(output).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise fsio.write_error(output, exc) from exc
    if not stat.S_ISREG(mode):
        raise UsageError(
            f"{output}: is {fsio.describe_type(mode)}, not a regular file; the report replaces the file "
            "at that path, so it never writes into a link, a FIFO or a device",
            hint="name a new or regular file, e.g. -o report.html",
        )


def build_report(store, experiment: str, output: Path, options: ReportOptions | None = None) -> ReportResult:
    """Collect, render and write the report to `output` (atomically)."""
    output = Path(output)
    _check_output(output)
    data = collect_report(store, experiment, options)
    # import budget: the sweep section (and the sweep results) load only when a report is built
    from mlkit.report.sweeps import sweeps_html

    page = render_html(data, sweeps_html(store, [r.run for r in data.runs])).encode("utf-8")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fsio.write_error(output, exc) from exc
    fsio.atomic_write(output, page)  # StoreError saying why (a full disk by name)
    return ReportResult(
        path=str(output),
        bytes=len(page),
        experiment_id=data.experiment_id,
        experiment_name=data.experiment_name,
        runs=[r.run.info.run_id for r in data.runs],
        runs_total=data.runs_total,
        metrics=[c.key for c in data.charts if c.group == "metrics"],
        system_metrics=[c.key for c in data.charts if c.group == "system"],
        counters=data.counters,
        params_changed=changed_params([r.run for r in data.runs]),
        images=[image for image, _ in data.images],
        skipped_images=data.skipped_images,
    )
