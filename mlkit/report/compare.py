"""Runs side by side: params and latest metrics in one column per run, and metric curves.

`resolve_runs` takes full ids, unique id prefixes (6+ characters) or unique run names.
`compare_runs` builds the table (its rows follow `mlkit.tracking.columns`, as `runs list` does);
`metric_curves` reads a metric's history for plotting (the terminal chart and the HTML report
both use it). A `--metric` no compared run logged is no error: it is listed in
`Comparison.unknown_metrics` (with the nearest keys) and drawn as nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mlkit.errors import MlkitError, NotFoundError, UsageError
from mlkit.tracking.columns import SYSTEM_PREFIX as SYSTEM_PREFIX  # the report imports it from here
from mlkit.tracking.columns import (
    Column,
    UnknownKey,
    keys_of,
    match_columns,
    ordered_keys,
    suggest,
    unknown_keys,
)
from mlkit.tracking.entities import Run
from mlkit.tracking.search_grammar import METRIC, PARAM, TAG


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
    """A metric across runs, ready to plot. `x` is 'step', or 'seconds' (wall time since each run's
    first value) for system/* metrics and when every value was logged at the same step."""

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
    unknown_metrics: list[UnknownKey] = field(default_factory=list)  # --metric keys no run logged


def resolve_runs(store, refs: list[str]) -> list[Run]:
    """The runs named by full ids, unique id prefixes or unique run names, in the order given
    (one resolver for every command: `mlkit.tracking.resolve`)."""
    # import budget: the run resolver loads only when runs are compared
    from mlkit.tracking.resolve import resolve_run

    runs: list[Run] = []
    for ref in refs:
        run = store.get_run(resolve_run(store, ref))
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
    columns: list[str] | None = None,
) -> Comparison:
    """Params and latest metrics of 2+ runs side by side (system/* metrics only with `system`).

    `columns` picks the param/metric/tag rows by name or glob, as `runs list --columns` does
    (`mlkit.tracking.columns.match_columns`); a name that matches nothing is an error.
    """
    if len(refs) < 2:
        raise UsageError(
            f"compare needs at least 2 runs, got {len(refs)}", hint="e.g. mlkit runs compare 1a2b3c 4d5e6f"
        )
    runs = resolve_runs(store, refs)
    run_columns = [_column(r) for r in runs]
    rows: list[CompareRow] = [
        CompareRow("run", "run_name", [c.run_name for c in run_columns], False),
        CompareRow("run", "status", [c.status for c in run_columns], False),
        CompareRow("run", "experiment_id", [c.experiment_id for c in run_columns], False),
        CompareRow("run", "duration_s", [c.duration_s for c in run_columns], False),
    ]
    for row in rows:
        row.changed = not _same(row.values)
    hidden = 0
    if only_changed:  # the run_name row stays: it names the columns
        kept = [row for row in rows if row.changed or row.key == "run_name"]
        hidden, rows = len(rows) - len(kept), kept
    known = keys_of(runs)
    if columns:
        picked = []
        for name in columns:
            hits = [c for c in match_columns(name, known) if c.kind in (PARAM, METRIC, TAG)]
            if not hits:
                near = suggest(name, known)
                raise NotFoundError(
                    f"--columns {name!r}: none of these runs has it",
                    hint=f"did you mean {' or '.join(near)}?" if near else "see `mlkit runs show RUN`",
                )
            picked += hits
        keys = [(c.kind, c.key) for c in dict.fromkeys(picked)]
    else:
        param_keys, metric_keys = ordered_keys(runs, system=system)
        keys = [(PARAM, k) for k in param_keys] + [(METRIC, k) for k in metric_keys]
    section = {PARAM: "params", METRIC: "metrics", TAG: "tags"}
    data = {PARAM: lambda r: r.data.params, METRIC: lambda r: r.data.metrics, TAG: lambda r: r.data.tags}
    for kind, key in keys:
        values = [data[kind](r).get(key) for r in runs]
        changed = not _same(values)
        if only_changed and not changed:
            hidden += 1
            continue
        rows.append(CompareRow(section[kind], key, values, changed))
    wanted = list(dict.fromkeys(key.removeprefix("metrics.") for key in curve_metrics or []))
    unknown = unknown_keys("--metric", [Column(METRIC, key) for key in wanted], known)
    curves = [metric_curves(store, runs, key) for key in wanted if key in known[METRIC]]
    return Comparison(run_columns, rows, only_changed, hidden, curves, unknown)


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
    # system metrics are sampled on a clock (their step is a sample counter): time is their axis
    x = "seconds" if key.startswith(SYSTEM_PREFIX) or (many and len(steps) == 1) else "step"
    return MetricCurves(key, x, series)


def known_metric_keys(runs: list[Run]) -> set[str]:
    """Every metric key any of the runs logged."""
    return {k for r in runs for k in r.data.metrics}
