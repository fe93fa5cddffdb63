"""What the read commands ask of the store: run listings, one run in full, log files, references."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlkit.errors import NotFoundError, UsageError
from mlkit.tracking.entities import STATUS_TO_INT, Experiment, FileInfo, Run
from mlkit.tracking.store import FileStore


def parse_duration(text: str) -> float:
    """'1d', '2h30m', '45s', '1.5w' -> seconds; UsageError otherwise."""
    from mlkit.gpu.units import parse_duration as parse

    return parse(text, flag="--since")


def resolve_experiment(store: FileStore, ref: str) -> Experiment:
    """An experiment by id or by name (active or deleted); NotFoundError when neither matches."""
    if ref.replace("-", "").replace("_", "").isalnum():
        try:
            return store.get_experiment(ref)
        except NotFoundError:
            pass
    experiment = store.get_experiment_by_name(ref)
    if experiment is None:
        raise NotFoundError(
            f"no experiment with id or name {ref!r} in {store.root}", hint="see `mlkit experiments list`"
        )
    return experiment


def list_runs(
    store: FileStore,
    *,
    experiments: list[str] | None = None,
    filter_string: str = "",
    order_by: list[str] | None = None,
    max_results: int = 100,
    since: str | None = None,
    status: str | None = None,
    include_deleted: bool = False,
) -> list[Run]:
    """Runs for `mlkit runs list` (lost runs are marked first)."""
    store.mark_lost_runs()
    if experiments:
        ids = [resolve_experiment(store, ref).experiment_id for ref in experiments]
    else:
        ids = [e.experiment_id for e in store.list_experiments("all" if include_deleted else "active")]
    clauses = [filter_string] if filter_string.strip() else []
    if since:
        clauses.append(f"attributes.start_time >= {int((time.time() - parse_duration(since)) * 1000)}")
    if status:
        if status.upper() not in STATUS_TO_INT:
            raise UsageError(
                f"--status {status!r}: unknown status", hint=f"use one of {', '.join(STATUS_TO_INT)}"
            )
        clauses.append(f"attributes.status = '{status.upper()}'")
    runs, _ = store.search_runs(
        ids,
        " AND ".join(clauses),
        order_by,
        max_results=max_results,
        run_view="all" if include_deleted else "active",
    )
    return runs


@dataclass
class MetricSummary:
    """A metric of one run: its latest value, the step of that value and how many values it has."""

    latest: float
    step: int
    timestamp: int
    count: int


@dataclass
class RunDetail:
    """Everything `mlkit runs show` prints about one run."""

    run: Run
    run_dir: Path
    artifact_dir: Path
    metrics: dict[str, MetricSummary] = field(default_factory=dict)
    artifacts: list[FileInfo] = field(default_factory=list)


def run_detail(store: FileStore, ref: str) -> RunDetail:
    """One run in full, by id or unique id prefix (lost runs are marked first)."""
    run_id = store.resolve_run_id(ref)
    store.mark_lost_runs()
    run = store.get_run(run_id)
    metrics = {}
    for key in store.metric_keys(run_id):
        history = store.get_metric_history(run_id, key)
        if history:
            last = max(history, key=lambda m: (m.step, m.timestamp, m.value))
            metrics[key] = MetricSummary(last.value, last.step, last.timestamp, len(history))
    artifact_dir = store.artifact_dir(run_id)
    return RunDetail(run, store.run_dir(run_id), artifact_dir, metrics, walk_artifacts(artifact_dir))


def walk_artifacts(base: Path, limit: int = 1000) -> list[FileInfo]:
    """Every file under an artifact directory (relative paths, sizes), at most `limit`."""
    infos: list[FileInfo] = []
    if not base.is_dir():
        return infos
    for dirpath, dirs, names in os.walk(base):
        dirs.sort()
        for name in sorted(names):
            path = Path(dirpath) / name
            try:
                size = path.stat().st_size
            except OSError:
                size = None
            infos.append(FileInfo(path.relative_to(base).as_posix(), False, size))
            if len(infos) >= limit:
                return infos
    return infos


def log_path(store: FileStore, run_id: str) -> Path:
    """Where the supervisor tees a run's output: <artifacts>/logs/output.log."""
    return store.artifact_dir(run_id) / "logs" / "output.log"
