"""What `mlkit report` shows, read from the store: `collect_report(store, ...)` gathers an
experiment's runs, their curves (down-sampled), images, log tails and registered models into a
`ReportData`; `mlkit.report.html` renders it."""

from __future__ import annotations

import base64
import math
import os
import re
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import datetime

from mlkit import fsio
from mlkit.errors import InvalidInputError, MlkitError, NotFoundError, UsageError
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


def natural_key(text: str) -> list[object]:
    """Sort key that orders "img10" after "img9" (digit runs compare as numbers)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


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
    return sorted(found, key=lambda item: natural_key(item[0]))


def _read_image(store, run_id: str, path: str, limit: int) -> bytes:
    """At most `limit` + 1 bytes of an image artifact. A run's artifacts belong to whoever made the
    run (on a shared store, another user): a link is not followed, a FIFO or device not read."""
    fd = fsio.open_file(store.artifact_file(run_id, path), other_owners=True)
    with os.fdopen(fd, "rb") as f:
        return f.read(limit + 1)


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
                data = _read_image(store, run_id, path, budget)
            except (OSError, MlkitError) as exc:
                why = exc.message if isinstance(exc, MlkitError) else exc.strerror or str(exc)
                skipped.append(SkippedImage(run_id, path, size, f"cannot read: {why}"))
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
    return sorted(differing_params(runs), key=natural_key)


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
        # import budget: the registry loads only when a report lists registered models
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
    # import budget: queries loads only when run details are collected
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


@dataclass(frozen=True)
class ReportOptions:
    """What to put in a report: which runs (`run_refs`, else the newest `max_runs`), how many
    images and points, and where the page's controls start (`x_axis`, `log_y`, `smoothing`)."""

    run_refs: list[str] | None = None
    max_runs: int = 50
    max_image_bytes: int = 20 * 1024 * 1024
    max_images_per_run: int = 8
    max_points: int = 500
    x_axis: str = "step"
    log_y: bool = False
    smoothing: float = 0.0


def collect_report(store, experiment: str, options: ReportOptions | None = None) -> ReportData:
    """Read what the report shows: the runs, each metric's curves, system metrics, images, and
    each run's files, log tail and models."""
    o = options or ReportOptions()
    max_runs, max_points, x_axis, smoothing = o.max_runs, o.max_points, o.x_axis, o.smoothing
    if max_runs < 1:
        raise UsageError(f"--max-runs {max_runs}: must be at least 1", hint="e.g. --max-runs 50")
    if o.max_images_per_run < 0:
        raise UsageError(
            f"--max-images-per-run {o.max_images_per_run}: must not be negative", hint="0 shows none; e.g. 8"
        )
    if x_axis not in X_AXES:
        raise UsageError(f"--x {x_axis!r}: must be one of {', '.join(X_AXES)}", hint="e.g. --x time")
    if not 0 <= smoothing < 1:
        raise UsageError(
            f"--smoothing {smoothing}: must be at least 0 and below 1", hint="e.g. --smoothing 0.6"
        )
    exp = _find_experiment(store, experiment)
    everything = _experiment_runs(store, exp.experiment_id)
    if o.run_refs:
        runs = resolve_runs(store, o.run_refs)
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
        key=lambda k: (k.startswith(SYSTEM_PREFIX), natural_key(k)),
    )
    counters = [k for k in keys if is_counter(k)]
    epochs = {i: _epoch_lookup(store, r) for i, r in enumerate(runs) if "epoch" in r.data.metrics}
    charts = [_chart(store, runs, key, max_points, epochs) for key in keys if not is_counter(key)]
    images, skipped = _collect_images(store, runs, o.max_image_bytes, o.max_images_per_run)
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
        log_y=o.log_y,
        smoothing=smoothing,
    )
