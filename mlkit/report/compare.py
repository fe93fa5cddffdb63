"""Runs side by side: params and latest metrics in one column per run, and metric curves.

`resolve_runs` takes full ids, unique id prefixes (6+ characters) or exact run names.
`compare_runs` builds the table; `metric_curves` reads a metric's history for plotting (the
terminal chart and the HTML report both use it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mlkit.errors import InvalidInputError, MlkitError, NotFoundError, UsageError
from mlkit.tracking.entities import Run

SYSTEM_PREFIX = "system/"


@dataclass
class RunColumn:
    """One compared run: the column header and its basic facts."""

    run_id: str
    run_name: str
    experiment_id: str
    status: str
    start_time: int | None
    end_time: int | None
    duration_s: float | None

    @property
    def label(self) -> str:
        """'name (1a2b3c4d)', the column header."""
        return f"{self.run_name} ({self.run_id[:8]})" if self.run_name else self.run_id[:8]


@dataclass
class CompareRow:
    """One row: a param, a metric's latest value, or a run attribute, across the runs."""

    section: str  # "run", "params" or "metrics"
    key: str
    values: list[str | float | None]
    changed: bool

    @property
    def name(self) -> str:
        """The row's name as MLflow's search spells it: params.lr, metrics.val_acc, status."""
        return self.key if self.section == "run" else f"{self.section}.{self.key}"


@dataclass
class CurveSeries:
    """One run's history of one metric, sorted by step (then time)."""

    run_id: str
    label: str
    steps: list[int]
    values: list[float]
    timestamps: list[int]


@dataclass
class MetricCurves:
    """A metric across runs, ready to plot. `x` is 'step', or 'seconds' when every step is equal."""

    key: str
    x: str
    series: list[CurveSeries]

    def xs(self, series: CurveSeries) -> list[float]:
        """The x coordinates of a series: its steps, or seconds since its first value."""
        if self.x == "step":
            return [float(s) for s in series.steps]
        start = series.timestamps[0] if series.timestamps else 0
        return [(t - start) / 1000 for t in series.timestamps]


@dataclass
class Comparison:
    """The compared runs and the rows (after --only-changed, if asked)."""

    runs: list[RunColumn]
    rows: list[CompareRow]
    only_changed: bool
    hidden_rows: int  # rows equal across runs that --only-changed left out
    curves: list[MetricCurves] = field(default_factory=list)


def _by_name(store, name: str) -> list[Run]:
    runs, token = [], None
    while True:
        page, token = store.search_runs(None, max_results=1000, page_token=token, run_view="all")
        runs.extend(r for r in page if r.info.run_name == name)
        if not token:
            return runs


def resolve_runs(store, refs: list[str]) -> list[Run]:
    """The runs named by full ids, unique id prefixes or exact run names, in the order given."""
    runs: list[Run] = []
    for ref in refs:
        try:
            run = store.get_run(store.resolve_run_id(ref))
        except NotFoundError as not_found:
            named = _by_name(store, ref)
            if len(named) > 1:
                ids = ", ".join(r.info.run_id[:12] for r in named[:5])
                raise InvalidInputError(
                    f"run name {ref!r} is used by {len(named)} runs: {ids}",
                    hint="give a run id (or a prefix) instead",
                ) from None
            if not named:
                raise not_found
            run = named[0]
        except InvalidInputError:
            named = _by_name(store, ref)
            if len(named) != 1:
                raise
            run = named[0]
        if any(r.info.run_id == run.info.run_id for r in runs):
            raise UsageError(f"run {ref!r} is given twice ({run.info.run_id})", hint="name each run once")
        runs.append(run)
    return runs


def _same(values: list[str | float | None]) -> bool:
    first = values[0]
    for value in values[1:]:
        if isinstance(first, float) and isinstance(value, float):
            if not (first == value or (math.isnan(first) and math.isnan(value))):
                return False
        elif value != first:
            return False
    return True


def _column(run: Run) -> RunColumn:
    info = run.info
    duration = (info.end_time - info.start_time) / 1000 if info.end_time and info.start_time else None
    return RunColumn(
        info.run_id, info.run_name, info.experiment_id, info.status, info.start_time, info.end_time, duration
    )


def compare_runs(
    store,
    refs: list[str],
    *,
    only_changed: bool = False,
    system: bool = False,
    curve_metrics: list[str] | None = None,
) -> Comparison:
    """Params and latest metrics of 2+ runs side by side (system/* metrics only with `system`)."""
    if len(refs) < 2:
        raise UsageError(
            f"compare needs at least 2 runs, got {len(refs)}", hint="e.g. mlkit runs compare 1a2b3c 4d5e6f"
        )
    runs = resolve_runs(store, refs)
    columns = [_column(r) for r in runs]
    rows: list[CompareRow] = [
        CompareRow("run", "run_name", [c.run_name for c in columns], False),
        CompareRow("run", "status", [c.status for c in columns], False),
        CompareRow("run", "experiment_id", [c.experiment_id for c in columns], False),
        CompareRow("run", "duration_s", [c.duration_s for c in columns], False),
    ]
    for row in rows:
        row.changed = not _same(row.values)
    hidden = 0
    if only_changed:  # the run_name row stays: it names the columns
        kept = [row for row in rows if row.changed or row.key == "run_name"]
        hidden, rows = len(rows) - len(kept), kept
    param_keys = sorted({k for r in runs for k in r.data.params})
    metric_keys = sorted(
        {k for r in runs for k in r.data.metrics if system or not k.startswith(SYSTEM_PREFIX)},
        key=lambda k: (k.startswith(SYSTEM_PREFIX), k),
    )
    for section, keys, get in (
        ("params", param_keys, lambda r, k: r.data.params.get(k)),
        ("metrics", metric_keys, lambda r, k: r.data.metrics.get(k)),
    ):
        for key in keys:
            values = [get(r, key) for r in runs]
            changed = not _same(values)
            if only_changed and not changed:
                hidden += 1
                continue
            rows.append(CompareRow(section, key, values, changed))
    known = known_metric_keys(runs)
    for key in curve_metrics or []:
        if key not in known:
            listed = ", ".join(sorted(known)[:12]) or "none"
            raise NotFoundError(
                f"--metric {key!r}: none of these runs logged it",
                hint=f"metrics they logged: {listed}",
            )
    curves = [metric_curves(store, runs, key) for key in (curve_metrics or [])]
    return Comparison(columns, rows, only_changed, hidden, curves)


def metric_curves(store, runs: list[Run], key: str, *, max_points: int | None = None) -> MetricCurves:
    """The history of `key` in each run, sorted by step; `max_points` thins long histories."""
    series: list[CurveSeries] = []
    for run in runs:
        try:
            history = store.get_metric_history(run.info.run_id, key)
        except MlkitError as exc:
            raise exc.__class__(f"metric {key!r} of run {run.info.run_id}: {exc.message}", exc.hint) from exc
        history.sort(key=lambda m: (m.step, m.timestamp))
        if max_points and len(history) > max_points:
            stride = len(history) / max_points
            picked = [history[int(i * stride)] for i in range(max_points - 1)] + [history[-1]]
            history = picked
        label = f"{run.info.run_name} ({run.info.run_id[:8]})" if run.info.run_name else run.info.run_id[:8]
        series.append(
            CurveSeries(
                run.info.run_id,
                label,
                [m.step for m in history],
                [m.value for m in history],
                [m.timestamp for m in history],
            )
        )
    steps = {s for one in series for s in one.steps}
    many = any(len(one.steps) > 1 for one in series)
    x = "seconds" if many and len(steps) == 1 else "step"
    return MetricCurves(key, x, series)


def known_metric_keys(runs: list[Run]) -> set[str]:
    """Every metric key any of the runs logged."""
    return {k for r in runs for k in r.data.metrics}
