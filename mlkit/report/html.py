"""`mlkit report`: one self-contained HTML file about an experiment's runs.

The file needs no network: CSS and JavaScript are inline, charts are drawn as inline SVG by the
page's own script from a JSON block, images are `data:` URIs. Every string from the store (run
names, params, tags, experiment names, artifact paths) is HTML-escaped, and the JSON block is
written so that no value can close its <script> element.

`collect_report(store, ...)` reads the store into a `ReportData`; `render_html(data)` is pure;
`build_report(...)` does both and writes the file atomically.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mlkit import __version__
from mlkit.errors import InvalidInputError, NotFoundError, StoreError, UsageError
from mlkit.report.assets import CSS, JS
from mlkit.report.compare import SYSTEM_PREFIX, metric_curves, resolve_runs
from mlkit.tracking.entities import Run

IMAGE_TYPES = {  # extension -> (mime type, magic bytes at offset 0 / a check)
    ".png": ("image/png", (b"\x89PNG\r\n\x1a\n",)),
    ".jpg": ("image/jpeg", (b"\xff\xd8\xff",)),
    ".jpeg": ("image/jpeg", (b"\xff\xd8\xff",)),
    ".gif": ("image/gif", (b"GIF87a", b"GIF89a")),
    ".webp": ("image/webp", (b"RIFF",)),
}
TAB10 = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip


@dataclass
class ReportImage:
    """An image artifact shown inline."""

    run_id: str
    path: str
    bytes: int
    mime: str


@dataclass
class SkippedImage:
    """An image artifact left out of the report, and why."""

    run_id: str
    path: str
    bytes: int
    reason: str


@dataclass
class ReportRun:
    """One run in the report: its table row and its colour in every chart."""

    run: Run
    color: str

    @property
    def label(self) -> str:
        info = self.run.info
        return f"{info.run_name} ({info.run_id[:8]})" if info.run_name else info.run_id[:8]


@dataclass
class ReportChart:
    """One chart: a metric across runs; `series` is (run index, xs, ys) with None for non-finite."""

    key: str
    group: str  # "metrics" or "system"
    x: str
    series: list[tuple[int, list[float], list[float | None]]]


@dataclass
class ReportData:
    """Everything the page shows, read from the store."""

    experiment_id: str
    experiment_name: str
    store: str
    runs: list[ReportRun]
    runs_total: int  # runs in the experiment (the report shows at most --max-runs)
    charts: list[ReportChart]
    images: list[tuple[ReportImage, str]]  # with the data: URI
    skipped_images: list[SkippedImage]
    generated: str
    max_points: int


@dataclass
class ReportResult:
    """What `mlkit report` wrote."""

    path: str
    bytes: int
    experiment_id: str
    experiment_name: str
    runs: list[str]
    runs_total: int
    metrics: list[str]
    system_metrics: list[str]
    images: list[ReportImage]
    skipped_images: list[SkippedImage]


def run_color(index: int) -> str:
    """A distinct colour per run: tab10, then golden-angle hues."""
    if index < len(TAB10):
        return TAB10[index]
    hue = (index * 137.508) % 360
    return f"hsl({hue:.0f}, 65%, 45%)"


def _natural_key(text: str) -> list[object]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


# ---------------------------------------------------------------------------------- collect


def _find_experiment(store, ref: str):
    exp = store.get_experiment_by_name(ref)
    if exp is not None:
        return exp
    try:
        return store.get_experiment(ref)
    except (NotFoundError, InvalidInputError):
        raise NotFoundError(
            f"--experiment {ref!r}: no experiment with that name or id in {store.root}",
            hint="see `mlkit experiments list`",
        ) from None


def _experiment_runs(store, experiment_id: str) -> list[Run]:
    runs: list[Run] = []
    token = None
    while True:
        page, token = store.search_runs(
            [experiment_id], order_by=["attributes.start_time DESC"], max_results=1000, page_token=token
        )
        runs.extend(page)
        if not token:
            return runs


def _image_files(store, run_id: str) -> list[tuple[str, int]]:
    """(artifact path, size) of every image artifact of a run, in natural order."""
    found: list[tuple[str, int]] = []
    stack: list[str | None] = [None]
    while stack:
        for entry in store.list_artifacts(run_id, stack.pop()):
            if entry.is_dir:
                stack.append(entry.path)
            elif os.path.splitext(entry.path)[1].lower() in IMAGE_TYPES:
                found.append((entry.path, entry.file_size or 0))
    return sorted(found, key=lambda item: _natural_key(item[0]))


def _collect_images(
    store, runs: list[Run], max_bytes: int, per_run: int
) -> tuple[list[tuple[ReportImage, str]], list[SkippedImage]]:
    """Images to show (each with its data: URI) and those left out, within the byte budget."""
    images: list[tuple[ReportImage, str]] = []
    skipped: list[SkippedImage] = []
    budget = max_bytes
    for run in runs:
        run_id = run.info.run_id
        files = _image_files(store, run_id)
        if per_run >= 0 and len(files) > per_run:
            for path, size in files[: len(files) - per_run]:
                skipped.append(
                    SkippedImage(run_id, path, size, f"only the last {per_run} images of a run are shown")
                )
            files = files[len(files) - per_run :]
        for path, size in files:
            if size > budget:
                skipped.append(
                    SkippedImage(run_id, path, size, f"over the image budget ({max_bytes} bytes in all)")
                )
                continue
            try:
                data = store.artifact_file(run_id, path).read_bytes()
            except OSError as exc:
                skipped.append(SkippedImage(run_id, path, size, f"cannot read: {exc.strerror or exc}"))
                continue
            mime, magics = IMAGE_TYPES[os.path.splitext(path)[1].lower()]
            if not data.startswith(magics) or (mime == "image/webp" and data[8:12] != b"WEBP"):
                skipped.append(SkippedImage(run_id, path, len(data), f"not a {mime} file"))
                continue
            if len(data) > budget:
                skipped.append(
                    SkippedImage(run_id, path, len(data), f"over the image budget ({max_bytes} bytes in all)")
                )
                continue
            budget -= len(data)
            uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
            images.append((ReportImage(run_id, path, len(data), mime), uri))
    return images, skipped


def collect_report(
    store,
    experiment: str,
    *,
    run_refs: list[str] | None = None,
    max_runs: int = 50,
    max_image_bytes: int = 20 * 1024 * 1024,
    max_images_per_run: int = 8,
    max_points: int = 500,
) -> ReportData:
    """Read what the report shows: the runs, each metric's curves, system metrics, images."""
    if max_runs < 1:
        raise UsageError(f"--max-runs {max_runs}: must be at least 1", hint="e.g. --max-runs 50")
    exp = _find_experiment(store, experiment)
    everything = _experiment_runs(store, exp.experiment_id)
    if run_refs:
        runs = resolve_runs(store, run_refs)
        for run in runs:
            if run.info.experiment_id != exp.experiment_id:
                raise UsageError(
                    f"run {run.info.run_id} is in experiment {run.info.experiment_id}, not {exp.name!r}",
                    hint="pass runs of the reported experiment, or drop --runs",
                )
        runs = runs[:max_runs]
    else:
        runs = everything[:max_runs]
    report_runs = [ReportRun(run, run_color(i)) for i, run in enumerate(runs)]
    keys = sorted({k for r in runs for k in r.data.metrics}, key=lambda k: (k.startswith(SYSTEM_PREFIX), k))
    charts = []
    for key in keys:
        holders = [i for i, r in enumerate(runs) if key in r.data.metrics]
        curves = metric_curves(store, [runs[i] for i in holders], key, max_points=max_points)
        series = []
        for index, one in zip(holders, curves.series, strict=True):
            ys = [v if math.isfinite(v) else None for v in one.values]
            series.append((index, curves.xs(one), ys))
        group = "system" if key.startswith(SYSTEM_PREFIX) else "metrics"
        charts.append(ReportChart(key, group, curves.x, series))
    images, skipped = _collect_images(store, runs, max_image_bytes, max_images_per_run)
    return ReportData(
        experiment_id=exp.experiment_id,
        experiment_name=exp.name,
        store=str(store.root),
        runs=report_runs,
        runs_total=len(everything),
        charts=charts,
        images=images,
        skipped_images=skipped,
        generated=datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"),
        max_points=max_points,
    )


# ---------------------------------------------------------------------------------- render


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


def _cell(text: object, sort: object = None, numeric: bool = False) -> str:
    cls = ' class="num"' if numeric else ""
    sort = text if sort is None else sort
    return f'<td{cls} data-v="{esc(sort)}">{esc(text)}</td>'


def _runs_table(data: ReportData) -> str:
    runs = [r.run for r in data.runs]
    params = sorted({k for r in runs for k in r.data.params})
    metrics = sorted({k for r in runs for k in r.data.metrics if not k.startswith(SYSTEM_PREFIX)})
    fixed = ["Run", "Run ID", "Status", "Start", "Duration"]
    head = [f'<th scope="col">{esc(name)}</th>' for name in fixed]
    head += [f'<th scope="col" class="group-metrics">{esc(k)}</th>' for k in metrics]
    head += [f'<th scope="col" class="group-params">{esc(k)}</th>' for k in params]
    body = []
    for report_run in data.runs:
        run, info = report_run.run, report_run.run.info
        status = (
            info.status
            if info.status in ("FINISHED", "FAILED", "KILLED", "RUNNING", "SCHEDULED")
            else "OTHER"
        )
        duration = _duration(run)
        failure = run.data.tags.get("mlkit.failure_reason")
        reason = f' title="{esc(failure)}"' if failure else ""
        cells = [
            f'<td data-v="{esc(info.run_name)}"><span class="swatch" style="background:{esc(report_run.color)}">'
            f"</span>{esc(info.run_name)}</td>",
            f'<td data-v="{esc(info.run_id)}" title="{esc(info.run_id)}"><code>{esc(info.run_id[:8])}</code></td>',
            f'<td data-v="{esc(info.status)}"><span class="status status-{status}"{reason}>'
            f"{esc(info.status)}</span></td>",
            _cell(_time(info.start_time), info.start_time or ""),
            _cell(_fmt_duration(duration), "" if duration is None else duration, numeric=True),
        ]
        for key in metrics:
            value = run.data.metrics.get(key)
            sort = "" if value is None or not math.isfinite(value) else repr(value)
            cells.append(_cell(_num(value), sort, numeric=True))
        for key in params:
            value = run.data.params.get(key)
            cells.append(_cell("" if value is None else value, numeric=_is_number(value)))
        body.append(f'<tr data-run-id="{esc(info.run_id)}">{"".join(cells)}</tr>')
    return (
        '<div class="table-wrap"><table class="runs" id="runs-table">'
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


def _payload(data: ReportData) -> dict[str, object]:
    return {
        "runs": [{"id": r.run.info.run_id, "label": r.label, "color": r.color} for r in data.runs],
        "charts": [
            {
                "key": chart.key,
                "group": chart.group,
                "x": chart.x,
                "series": [{"run": i, "x": xs, "y": ys} for i, xs, ys in chart.series],
            }
            for chart in data.charts
        ],
    }


def render_html(data: ReportData) -> str:
    """The report page as one HTML document (pure: no I/O)."""
    shown = len(data.runs)
    scope = f"{shown} run(s)" + (f" of {data.runs_total}" if data.runs_total != shown else "")
    has_system = any(c.group == "system" for c in data.charts)
    system = (
        _chart_boxes(data, "system")
        if has_system
        else '<p class="note">No system metrics (system/...) logged.</p>'
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
<h2>Runs</h2>
<p class="note">Click a column header to sort; click again to reverse.</p>
{_runs_table(data)}
<h2>Metrics</h2>
<noscript><p class="note">The charts are drawn by the page's script; enable JavaScript to see them.</p></noscript>
<div class="legend" id="legend"></div>
{_chart_boxes(data, "metrics")}
<h2>System metrics</h2>
{system}
<h2>Images</h2>
{_images_section(data)}
<script type="application/json" id="report-data">{script_json(_payload(data))}</script>
<script>{JS}</script>
</body>
</html>
"""


def build_report(
    store,
    experiment: str,
    output: Path,
    *,
    run_refs: list[str] | None = None,
    max_runs: int = 50,
    max_image_bytes: int = 20 * 1024 * 1024,
    max_images_per_run: int = 8,
    max_points: int = 500,
) -> ReportResult:
    """Collect, render and write the report to `output` (atomically)."""
    data = collect_report(
        store,
        experiment,
        run_refs=run_refs,
        max_runs=max_runs,
        max_image_bytes=max_image_bytes,
        max_images_per_run=max_images_per_run,
        max_points=max_points,
    )
    page = render_html(data).encode("utf-8")
    output = Path(output)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(page)
        os.replace(tmp, output)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StoreError(
            f"{output}: cannot write the report: {exc}", hint="check the path and free space"
        ) from exc
    return ReportResult(
        path=str(output),
        bytes=len(page),
        experiment_id=data.experiment_id,
        experiment_name=data.experiment_name,
        runs=[r.run.info.run_id for r in data.runs],
        runs_total=data.runs_total,
        metrics=[c.key for c in data.charts if c.group == "metrics"],
        system_metrics=[c.key for c in data.charts if c.group == "system"],
        images=[image for image, _ in data.images],
        skipped_images=data.skipped_images,
    )
