"""A sweep's results: one row per trial (its latest run), best first. Used by `mlkit sweep show`,
`mlkit report` and the folded `mlkit runs list`."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from mlkit.sweep.records import (
    FAILURE_TAG,
    PARENT_TAG,
    TAG_DIRECTION,
    TAG_KEY,
    TAG_METHOD,
    TAG_METRIC,
    TAG_SLOT,
    is_pruned,
    load_spec,
    trial_runs,
)


@dataclass
class TrialRow:
    """One trial: its run, slot, key, status (`pruned` for a pruned one), params, metric, duration."""

    run_id: str
    slot: int | None
    trial_key: str | None
    status: str
    failure_reason: str | None
    params: dict[str, str]
    metric: float | None
    duration_s: float | None
    attempts: int = 1

    def document(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SweepTable:
    """A sweep's parent run (id, name, status, method, metric, direction) and its trials, best first."""

    sweep_id: str
    name: str
    status: str
    method: str
    metric: str | None
    direction: str
    planned: int
    params: list[str]
    trials: list[TrialRow] = field(default_factory=list)

    def best(self) -> TrialRow | None:
        done = [t for t in self.trials if t.status == "FINISHED" and t.metric is not None]
        return done[0] if done else None

    def document(self) -> dict[str, Any]:
        doc = {k: v for k, v in asdict(self).items() if k != "trials"}
        doc["trials"] = [t.document() for t in self.trials]
        return doc


def _duration(run: Any) -> float | None:
    start, end = run.info.start_time, run.info.end_time
    return (end - start) / 1000 if start and end else None


def final_metric(store: Any, run_id: str, metric: str | None) -> float | None:
    """A trial's result: the last value of `metric` it logged (highest step, then latest), or None
    when it logged none or that value is NaN or infinite (no rank, no point, nothing told Optuna)."""
    if not metric:
        return None
    history = store.get_metric_history(run_id, metric)
    if not history:
        return None
    value = float(max(history, key=lambda m: (m.step, m.timestamp)).value)
    return value if math.isfinite(value) else None


def _rank(run: Any) -> int:
    """Which of a slot's runs stands for it: a finished or pruned one, else a live one, else the latest."""
    if run.info.status == "FINISHED" or is_pruned(run):
        return 3
    return 2 if run.info.status in ("RUNNING", "SCHEDULED") else 1


def sweep_table(store: Any, sweep_id: str) -> SweepTable:
    """The table of `sweep_id`'s trials: one row per slot (its deciding run), best metric first."""
    parent = store.get_run(sweep_id)
    spec = load_spec(store, sweep_id)
    tags = parent.data.tags
    swept = [k for k in spec["params"] if k not in spec.get("fixed", {})]
    metric = tags.get(TAG_METRIC) or spec.get("metric")
    direction = tags.get(TAG_DIRECTION, spec.get("direction", "minimize"))
    by_slot: dict[str, list[Any]] = {}
    for run in trial_runs(store, sweep_id):
        by_slot.setdefault(run.data.tags.get(TAG_SLOT) or run.info.run_id, []).append(run)
    rows = []
    for slot, runs in by_slot.items():
        run = max(enumerate(runs), key=lambda ir: (_rank(ir[1]), ir[0]))[1]
        rt = run.data.tags
        pruned = is_pruned(run)
        rows.append(TrialRow(
            run_id=run.info.run_id,
            slot=int(slot) if slot.isdigit() else None,
            trial_key=rt.get(TAG_KEY),
            status="pruned" if pruned else run.info.status,
            failure_reason="pruned" if pruned else rt.get(FAILURE_TAG),
            params={k: run.data.params.get(k, "") for k in swept},
            metric=final_metric(store, run.info.run_id, metric),
            duration_s=_duration(run),
            attempts=len(runs),
        ))  # fmt: skip
    sign = -1.0 if direction == "maximize" else 1.0
    order = {"FINISHED": 0, "pruned": 1, "RUNNING": 2, "SCHEDULED": 3}
    rows.sort(key=lambda r: (r.status != "FINISHED" or r.metric is None, order.get(r.status, 4),
                             r.metric is None, sign * (r.metric or 0.0), r.slot or 0))  # fmt: skip
    return SweepTable(
        sweep_id=sweep_id,
        name=parent.info.run_name or "",
        status=parent.info.status,
        method=tags.get(TAG_METHOD, spec["method"]),
        metric=metric,
        direction=direction,
        planned=int(spec["trials"]),
        params=swept,
        trials=rows,
    )


def is_sweep(run: Any) -> bool:
    """True for a sweep's parent run."""
    return TAG_METHOD in run.data.tags and PARENT_TAG not in run.data.tags


def space_of(run: Any) -> dict[str, str]:
    try:
        return dict(json.loads(run.data.tags.get("mlkit.sweep.space", "{}")))
    except ValueError:
        return {}
