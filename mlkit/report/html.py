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
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from mlkit import __version__, fsio
from mlkit.errors import InvalidInputError, MlkitError, NotFoundError, UsageError
from mlkit.report.assets import CSS, JS
from mlkit.report.compare import SYSTEM_PREFIX, metric_curves, resolve_runs
from mlkit.tracking.columns import differing_params, is_model_metric, metric_order
from mlkit.tracking.entities import Run

IMAGE_TYPES = {  # extension -> (mime type, magic bytes at offset 0 / a check)
    ".png": ("image/png", (b"\x89PNG\r\n\x1a\n",)),
    ".jpg": ("image/jpeg", (b"\xff\xd8\xff",)),
    ".jpeg": ("image/jpeg", (b"\xff\xd8\xff",)),
    ".gif": ("image/gif", (b"GIF87a", b"GIF89a")),
    ".webp": ("image/webp", (b"RIFF",)),
}
# Metrics that count progress rather than measure it: offered as an x axis, not drawn as curves.
COUNTER_KEYS = ("epoch", "step", "global_step", "iteration")
X_AXES = ("step", "epoch", "time")
LOG_TAIL_LINES = 40
LOG_TAIL_BYTES = 16 * 1024
MAX_ARTIFACTS_LISTED = 200
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
class RunDetails:
    """What a run's own section shows beyond its row: files, log tail, models."""

    artifacts: list[tuple[str, int | None]]  # (path, size), at most MAX_ARTIFACTS_LISTED
    artifacts_more: bool  # more files than listed
    log_tail: str | None  # the last lines of logs/output.log, control bytes escaped
    log_note: str | None  # why there is no log tail (missing, unreadable)
    model_uris: list[str]  # runs:/<id>/<path> for each logged model
    registered: list[str]  # "cnn v2 (champion, Production)"


@dataclass
class ReportRun:
    """One run in the report: its table row, its colour in every chart and its own section."""

    run: Run
    color: str
    details: RunDetails | None = None

    @property
    def label(self) -> str:
        info = self.run.info
        return f"{info.run_name} ({info.run_id[:8]})" if info.run_name else info.run_id[:8]


@dataclass
class ChartSeries:
    """One run's curve: per point its step, epoch (None when the run logs none), seconds since the
    run started, and value (None for NaN/inf)."""

    run: int  # index into ReportData.runs
    steps: list[float]
    epochs: list[float | None]
    seconds: list[float]
    values: list[float | None]


@dataclass
class ReportChart:
    """One chart: a metric across runs. `x` is the axis it opens with: "step", "epoch" or "time"
    (system metrics always "time")."""

    key: str
    group: str  # "metrics" or "system"
    x: str
    series: list[ChartSeries]


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
    counters: list[str] = field(default_factory=list)  # progress metrics (epoch, ...) not drawn
    x_axis: str = "step"  # the metric charts' opening x axis
    log_y: bool = False
    smoothing: float = 0.0


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
    counters: list[str]
    params_changed: list[str]
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


def is_counter(key: str) -> bool:
    """A metric that counts progress (`epoch`, `train/step`, ...): an axis, not a curve."""
    return key.rsplit("/", 1)[-1].lower() in COUNTER_KEYS and not key.startswith(SYSTEM_PREFIX)


def changed_params(runs: list[Run]) -> list[str]:
    """Param keys whose values differ across the runs, in natural order: the rule every runs
    table uses (`mlkit.tracking.columns.differing_params`, as `runs compare --only-changed`)."""
    if len(runs) < 2:
        return []
    return sorted(differing_params(runs), key=_natural_key)


def table_metrics(runs: list[Run]) -> list[str]:
    """The metric columns: the model's metrics (not system/*, not bookkeeping such as epoch or
    lr), validation and test first, as `runs list` shows them."""
    return sorted({k for r in runs for k in r.data.metrics if is_model_metric(k)}, key=metric_order)


def _epoch_lookup(store, run: Run) -> tuple[list[int], list[float]]:
    """A run's `epoch` metric as (steps, values) sorted by step, for mapping a step to its epoch."""
    if "epoch" not in run.data.metrics:
        return [], []
    history = sorted(store.get_metric_history(run.info.run_id, "epoch"), key=lambda m: (m.step, m.timestamp))
    return [m.step for m in history], [m.value for m in history]


def _chart(
    store, runs: list[Run], key: str, max_points: int, epochs: dict[int, tuple[list[int], list[float]]]
) -> ReportChart:
    holders = [i for i, r in enumerate(runs) if key in r.data.metrics]
    curves = metric_curves(store, [runs[i] for i in holders], key, max_points=max_points)
    series = []
    for index, one in zip(holders, curves.series, strict=True):
        run = runs[index]
        start = run.info.start_time or (one.timestamps[0] if one.timestamps else 0)
        e_steps, e_values = epochs.get(index, ([], []))
        on_epoch = []
        for step in one.steps:
            at = bisect_right(e_steps, step) - 1  # the epoch logged last at or before this step
            on_epoch.append(e_values[at] if at >= 0 and math.isfinite(e_values[at]) else None)
        series.append(
            ChartSeries(
                index,
                [float(step) for step in one.steps],
                on_epoch,
                [round((t - start) / 1000, 3) for t in one.timestamps],
                [v if math.isfinite(v) else None for v in one.values],
            )
        )
    system = key.startswith(SYSTEM_PREFIX)
    # every step equal (values logged without a step): time is the only axis that spreads them
    x = "time" if system or curves.x == "seconds" else "step"
    return ReportChart(key, "system" if system else "metrics", x, series)


def _log_tail(store, run_id: str) -> tuple[str | None, str | None]:
    """The last LOG_TAIL_LINES lines of the run's output.log (never through a link), or why not."""
    try:
        path = store.artifact_file(run_id, "logs/output.log")
        fd = fsio.open_file(path, other_owners=True)
    except FileNotFoundError:
        return None, "no output log (logs/output.log): the run was not started by `mlkit run`"
    except (MlkitError, OSError) as exc:
        return None, f"output log not shown: {exc}"
    try:
        size = os.fstat(fd).st_size
        os.lseek(fd, max(0, size - LOG_TAIL_BYTES), os.SEEK_SET)
        raw = os.read(fd, LOG_TAIL_BYTES)
    except OSError as exc:
        return None, f"output log not shown: {exc.strerror or exc}"
    finally:
        os.close(fd)
    lines = raw.decode("utf-8", errors="replace").splitlines()
    if size > LOG_TAIL_BYTES and lines:
        lines = lines[1:]  # the first line was cut
    text = "\n".join(lines[-LOG_TAIL_LINES:])
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text), None


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # ESC and friends, shown, never sent to the page as is


def _registered(store, run_id: str) -> list[str]:
    try:
        from mlkit.tracking.registry import RegistryStore

        versions = RegistryStore(store.root).search_model_versions(run_id=run_id)
    except MlkitError:
        return []
    found = []
    for v in versions:
        marks = [*v.aliases, *([v.current_stage] if v.current_stage != "None" else [])]
        found.append(f"models:/{v.name}/{v.version}" + (f" ({', '.join(marks)})" if marks else ""))
    return found


def _run_details(store, run: Run) -> RunDetails:
    from mlkit.tracking.queries import walk_artifacts

    run_id = run.info.run_id
    try:
        files = walk_artifacts(store.artifact_dir(run_id), limit=MAX_ARTIFACTS_LISTED + 1)
    except (MlkitError, OSError):
        files = []
    paths = [f.path for f in files]
    models = sorted(
        p[: -len("MLmodel")].rstrip("/") for p in paths if p == "MLmodel" or p.endswith("/MLmodel")
    )
    tail, note = _log_tail(store, run_id)
    return RunDetails(
        artifacts=[(f.path, f.file_size) for f in files[:MAX_ARTIFACTS_LISTED]],
        artifacts_more=len(files) > MAX_ARTIFACTS_LISTED,
        log_tail=tail,
        log_note=note,
        model_uris=[f"runs:/{run_id}/{m}" if m else f"runs:/{run_id}" for m in models],
        registered=_registered(store, run_id),
    )


def collect_report(
    store,
    experiment: str,
    *,
    run_refs: list[str] | None = None,
    max_runs: int = 50,
    max_image_bytes: int = 20 * 1024 * 1024,
    max_images_per_run: int = 8,
    max_points: int = 500,
    x_axis: str = "step",
    log_y: bool = False,
    smoothing: float = 0.0,
) -> ReportData:
    """Read what the report shows: the runs, each metric's curves, system metrics, images, and
    each run's files, log tail and models. `x_axis`, `log_y`, `smoothing`: the controls' start."""
    if max_runs < 1:
        raise UsageError(f"--max-runs {max_runs}: must be at least 1", hint="e.g. --max-runs 50")
    if x_axis not in X_AXES:
        raise UsageError(f"--x {x_axis!r}: must be one of {', '.join(X_AXES)}", hint="e.g. --x time")
    if not 0 <= smoothing < 1:
        raise UsageError(
            f"--smoothing {smoothing}: must be at least 0 and below 1", hint="e.g. --smoothing 0.6"
        )
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
    report_runs = [ReportRun(run, run_color(i), _run_details(store, run)) for i, run in enumerate(runs)]
    keys = sorted(
        {k for r in runs for k in r.data.metrics},
        key=lambda k: (k.startswith(SYSTEM_PREFIX), _natural_key(k)),
    )
    counters = [k for k in keys if is_counter(k)]
    epochs = {i: _epoch_lookup(store, r) for i, r in enumerate(runs) if "epoch" in r.data.metrics}
    charts = [_chart(store, runs, key, max_points, epochs) for key in keys if not is_counter(key)]
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
        counters=counters,
        x_axis=x_axis,
        log_y=log_y,
        smoothing=smoothing,
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
    same = [k for k in sorted({k for r in runs for k in r.data.params}, key=_natural_key) if k not in changed]
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
        (k, v, k in changed) for k, v in sorted(run.data.params.items(), key=lambda kv: _natural_key(kv[0]))
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
        k for k in sorted({k for r in runs for k in r.data.params}, key=_natural_key) if k not in changed
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


def render_html(data: ReportData) -> str:
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
    x_axis: str = "step",
    log_y: bool = False,
    smoothing: float = 0.0,
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
        x_axis=x_axis,
        log_y=log_y,
        smoothing=smoothing,
    )
    page = render_html(data).encode("utf-8")
    output = Path(output)
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
