"""What the read commands ask of the store: run listings, one run in full, log files, references.

The read commands open the store with `open_existing_store`, which never creates one: a path
with no store is NotFoundError (exit 66) saying where it looked and how to point elsewhere.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlkit import settings
from mlkit.errors import InvalidInputError, NotFoundError, UsageError
from mlkit.tracking import files
from mlkit.tracking.columns import Column, keys_of, unknown_keys
from mlkit.tracking.entities import ACTIVE, STATUS_TO_INT, Experiment, FileInfo, Run
from mlkit.tracking.layout import DEFAULT_EXPERIMENT_ID, RESERVED_ROOT_DIRS
from mlkit.tracking.resolve import resolve_run
from mlkit.tracking.search_grammar import ATTRIBUTE, METRIC, PARAM, TAG, parse_filter, parse_order_by
from mlkit.tracking.store import FileStore
from mlkit.units import parse_duration as _parse_duration


def parse_duration(text: str) -> float:
    """'1d', '2h30m', '45s', '1.5w' -> seconds; UsageError otherwise."""
    return _parse_duration(text, flag="--since")


def resolve_experiment(store: FileStore, ref: str) -> Experiment:
    """An experiment by id or by name (active or deleted); NotFoundError when neither matches,
    InvalidInputError when `ref` is one experiment's id and another's name (`experiments delete 5`
    must not pick one of them silently)."""
    by_id = None
    if ref.replace("-", "").replace("_", "").isalnum():
        try:
            by_id = store.get_experiment(ref)
        except NotFoundError:
            pass
    experiment = store.get_experiment_by_name(ref)
    if by_id is not None:
        if experiment is not None and experiment.experiment_id != by_id.experiment_id:
            raise InvalidInputError(
                f"{ref!r} is experiment {by_id.experiment_id}'s id ({by_id.name!r}) and experiment "
                f"{experiment.experiment_id}'s name",
                hint=f"name one of them another way: {by_id.name!r} or {experiment.experiment_id}",
            )
        return by_id
    if experiment is None:
        raise NotFoundError(
            f"no experiment with id or name {ref!r} in {store.root}", hint="see `mlkit experiments list`"
        )
    return experiment


def _is_store(root: Path) -> bool:
    """True when `root` holds a tracking store: an experiment, the trash or the model registry."""
    if (root / DEFAULT_EXPERIMENT_ID / "meta.yaml").is_file():
        return True
    try:
        entries = list(os.scandir(root))
    except OSError:
        return False
    for entry in entries:
        if entry.is_dir(follow_symlinks=False) and (
            entry.name in RESERVED_ROOT_DIRS or os.path.isfile(os.path.join(entry.path, "meta.yaml"))
        ):
            return True
    return False


def open_existing_store(path: str | os.PathLike[str] | None = None) -> FileStore:
    """The store at --store PATH / $MLKIT_TRACKING_URI / ./mlruns, only if one is there already.

    For commands that read: they must not leave an empty `mlruns/` behind when run in the wrong
    directory. NotFoundError (exit 66) names the path and where it came from.
    """
    root = settings.tracking_root(path)
    if root.is_dir() and _is_store(root):
        return FileStore(root)
    if path:
        origin = "--store"
    elif os.environ.get("MLKIT_TRACKING_URI"):
        origin = "MLKIT_TRACKING_URI"
    elif os.environ.get("MLFLOW_TRACKING_URI"):
        origin = "MLFLOW_TRACKING_URI"
    else:
        origin = "the default, ./mlruns"
    what = "is not a tracking store" if root.exists() else "does not exist"
    raise NotFoundError(
        f"no tracking store at {root} ({origin}): the path {what}",
        hint="point at a store with --store PATH or MLKIT_TRACKING_URI=PATH, or create one with "
        "`mlkit run PROJECT` or `mlkit experiments create NAME`",
    )


@dataclass
class RunListing:
    """The runs a listing found, and a warning for each key it names that no run in scope has."""

    runs: list[Run]
    experiment_ids: list[str]
    warnings: list[str] = field(default_factory=list)


def keys_in_scope(
    store: FileStore, experiment_ids: list[str], run_view: str = "active"
) -> dict[str, set[str]]:
    """Every param, metric and tag key of the runs of these experiments (read from the files)."""
    # imported here: the search index (sqlite3) loads only for the reads that search
    from mlkit.tracking.search import indexed_runs

    stages = {"active": (ACTIVE,), "deleted": ("deleted",), "all": (ACTIVE, "deleted")}[run_view]
    keys: dict[str, set[str]] = {PARAM: set(), METRIC: set(), TAG: set()}
    for run in indexed_runs(store, experiment_ids):
        if run.info.get("lifecycle_stage", ACTIVE) in stages:
            for kind, sub in ((PARAM, "params"), (METRIC, "metrics"), (TAG, "tags")):
                keys[kind].update(files.list_keys(Path(run.run_dir) / sub))
    return keys


def find_runs(
    store: FileStore,
    *,
    experiments: list[str] | None = None,
    filter_string: str = "",
    order_by: list[str] | None = None,
    max_results: int = 100,
    since: str | None = None,
    status: str | None = None,
    include_deleted: bool = False,
) -> RunListing:
    """Runs for `mlkit runs list` (lost runs are marked first), plus a warning ("did you mean
    ...") for each key of the filter or order-by that no run in the experiments has: such a filter
    matches nothing and such an order is the default order, which is otherwise silent."""
    store.mark_lost_runs()
    if experiments:
        ids = [resolve_experiment(store, ref).experiment_id for ref in experiments]
    else:
        ids = [e.experiment_id for e in store.list_experiments("all" if include_deleted else "active")]
    runs = _search(store, ids, filter_string, order_by, max_results, since, status, include_deleted)
    named = {
        "--order-by": [Column(o.type, o.key) for o in parse_order_by(order_by) if o.type != ATTRIBUTE],
        "--filter": [Column(c.type, c.key) for c in parse_filter(filter_string) if c.type != ATTRIBUTE],
    }
    listing = RunListing(runs, ids)
    found = keys_of(runs)
    if any(unknown_keys(flag, cols, found) for flag, cols in named.items()):
        scope = keys_in_scope(store, ids, "all" if include_deleted else "active")
        for flag, cols in named.items():
            listing.warnings += [str(u) for u in unknown_keys(flag, dict.fromkeys(cols), scope)]
    return listing


def _search(
    store: FileStore,
    ids: list[str],
    filter_string: str,
    order_by: list[str] | None,
    max_results: int,
    since: str | None,
    status: str | None,
    include_deleted: bool,
) -> list[Run]:
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
    """One run in full, by id, unique id prefix or unique name (lost runs are marked first)."""
    run_id = resolve_run(store, ref)
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
