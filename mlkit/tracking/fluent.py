"""The fluent tracking API, with MLflow's names and signatures (`import mlkit as mlflow` works).

Inside a process started by `mlkit run` (MLKIT_RUN_ID or MLFLOW_RUN_ID set), `start_run()`
attaches to that run, and ending it leaves its status alone: the supervisor owns it.
"""

from __future__ import annotations

import atexit
import getpass
import json
import os
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from mlkit import settings
from mlkit.errors import InvalidInputError
from mlkit.tracking.entities import FAILED, FINISHED, KILLED, RUNNING, Experiment, Run, RunData, RunInfo
from mlkit.tracking.files import dump_yaml
from mlkit.tracking.lost import ownership_tags
from mlkit.tracking.store import FileStore

_lock = threading.RLock()
_stores: dict[Path, FileStore] = {}
_active: list[ActiveRun] = []
_experiment_id: str | None = None
_hooks_installed = False
_uncaught = False


def _store() -> FileStore:
    root = settings.tracking_root()
    with _lock:
        store = _stores.get(root)
        if store is None:
            store = _stores[root] = FileStore(root)
        return store


class ActiveRun:
    """A run started by `start_run`; a context manager that ends it (FINISHED, or FAILED on error)."""

    def __init__(self, run: Run, store: FileStore, *, attached: bool = False) -> None:
        self._run = run
        self._store = store
        self.run_id = run.info.run_id
        self.attached = attached  # owned by `mlkit run`: ending it leaves the status alone

    @property
    def info(self) -> RunInfo:
        """The run's info (as when it started)."""
        return self._run.info

    @property
    def data(self) -> RunData:
        """The run's data, read fresh from the store."""
        return _store().get_run(self._run.info.run_id).data

    def __enter__(self) -> ActiveRun:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        if exc_type is None:
            status = FINISHED
        elif issubclass(exc_type, KeyboardInterrupt):
            status = KILLED
        else:
            status = FAILED
        end_run(status, _run=self)
        return False

    def __repr__(self) -> str:
        return f"<ActiveRun: run_id={self.info.run_id}, experiment_id={self.info.experiment_id}>"


def _install_hooks() -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    previous = sys.excepthook

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        global _uncaught
        _uncaught = True
        previous(exc_type, exc, tb)

    sys.excepthook = hook
    atexit.register(_end_all_at_exit)


def _end_all_at_exit() -> None:
    while _active:
        try:
            end_run(FAILED if _uncaught else FINISHED)
        except Exception:  # never raise during interpreter exit
            _active.pop()


def _env_run_id() -> str | None:
    return os.environ.get("MLKIT_RUN_ID") or os.environ.get("MLFLOW_RUN_ID") or None


def _default_experiment_id(store: FileStore) -> str:
    if _experiment_id is not None:
        return _experiment_id
    env_id = os.environ.get("MLKIT_EXPERIMENT_ID") or os.environ.get("MLFLOW_EXPERIMENT_ID")
    if env_id:
        return env_id
    name = os.environ.get("MLKIT_EXPERIMENT_NAME") or os.environ.get("MLFLOW_EXPERIMENT_NAME")
    if name:
        return store.get_or_create_experiment(name)
    return "0"


def _creation_tags(extra: dict[str, Any] | None) -> dict[str, str]:
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    tags = {
        "mlflow.user": user,
        "mlflow.source.name": sys.argv[0] if sys.argv and sys.argv[0] else "<console>",
        "mlflow.source.type": "LOCAL",
        **ownership_tags(),
    }
    tags.update({str(k): str(v) for k, v in (extra or {}).items()})
    return tags


def start_run(
    run_id: str | None = None,
    experiment_id: str | None = None,
    run_name: str | None = None,
    nested: bool = False,
    tags: dict[str, Any] | None = None,
    description: str | None = None,
    parent_run_id: str | None = None,
) -> ActiveRun:
    """Start a run (or resume `run_id`, or attach to the run `mlkit run` started) and make it active."""
    store = _store()
    with _lock:
        if _active and not nested:
            raise InvalidInputError(
                f"run {_active[-1].info.run_id} is already active",
                hint="end it first with mlkit.end_run(), or pass nested=True",
            )
        attached = False
        env_run = _env_run_id()
        if run_id is None and not _active and env_run:
            run_id, attached = env_run, True
        elif run_id is not None and run_id == env_run:
            attached = True
        if run_id is not None:
            run = store.get_run(run_id)
            if experiment_id is not None and str(experiment_id) != run.info.experiment_id:
                raise InvalidInputError(
                    f"run {run_id} belongs to experiment {run.info.experiment_id}, not {experiment_id}",
                    hint="leave experiment_id out when resuming a run",
                )
            if not attached:  # resumed here: this process owns it now (a lost-run check judges it by us)
                store.set_tags(run_id, ownership_tags())
                if run.info.status != RUNNING:
                    store.update_run_status(run_id, RUNNING)
            for key, value in (tags or {}).items():
                store.set_tag(run_id, key, value)
            if run_name and run_name != run.info.run_name:
                store.set_tag(run_id, "mlflow.runName", run_name)
            run = store.get_run(run_id)
        else:
            exp_id = str(experiment_id) if experiment_id is not None else _default_experiment_id(store)
            all_tags = _creation_tags(tags)
            parent = parent_run_id or (_active[-1].info.run_id if _active and nested else None)
            if parent:
                all_tags["mlflow.parentRunId"] = parent
            if description:
                all_tags["mlflow.note.content"] = description
            run = store.create_run(exp_id, run_name=run_name, tags=all_tags)
        active = ActiveRun(run, store, attached=attached)
        _active.append(active)
        _install_hooks()
        return active


def end_run(status: str = FINISHED, _run: ActiveRun | None = None) -> None:
    """End the active run with this status (a run owned by `mlkit run` keeps its status)."""
    with _lock:
        if not _active:
            return
        active = _run if _run is not None and _run in _active else _active[-1]
        _active.remove(active)
        store = active._store
        if active.attached:
            store.close_run_files(active.info.run_id)
            return
        store.set_terminated(active.info.run_id, status)


def active_run() -> ActiveRun | None:
    """The run logged to now, or None."""
    return _active[-1] if _active else None


def _target() -> tuple[FileStore, str]:
    """The store and id of the active run, starting a run if none is active (as MLflow does)."""
    run = _active[-1] if _active else start_run()
    return run._store, run.run_id


def log_param(key: str, value: Any) -> Any:
    """Log a param to the active run (starting one if needed); returns the value."""
    store, run_id = _target()
    store.log_param(run_id, key, value)
    return value


def log_params(params: dict[str, Any]) -> None:
    """Log several params to the active run."""
    store, run_id = _target()
    store.log_params(run_id, params)


def log_metric(key: str, value: float, step: int | None = None, timestamp: int | None = None) -> None:
    """Log a metric value to the active run."""
    if _active:  # the hot path: no settings lookup per call
        active = _active[-1]
        active._store.log_metric(active.run_id, key, value, 0 if step is None else step, timestamp)
        return
    store, run_id = _target()
    store.log_metric(run_id, key, value, 0 if step is None else step, timestamp)


def log_metrics(metrics: dict[str, float], step: int | None = None, timestamp: int | None = None) -> None:
    """Log several metric values at one step to the active run."""
    store, run_id = _target()
    store.log_metrics(run_id, metrics, 0 if step is None else step, timestamp)


def set_tag(key: str, value: Any) -> None:
    """Set a tag on the active run."""
    store, run_id = _target()
    store.set_tag(run_id, key, value)


def set_tags(tags: dict[str, Any]) -> None:
    """Set several tags on the active run."""
    store, run_id = _target()
    store.set_tags(run_id, tags)


def log_artifact(local_path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
    """Copy a local file into the active run's artifacts (under artifact_path if given)."""
    store, run_id = _target()
    store.log_artifact(run_id, local_path, artifact_path)


def log_artifacts(local_dir: str | os.PathLike[str], artifact_path: str | None = None) -> None:
    """Copy a directory's content into the active run's artifacts."""
    store, run_id = _target()
    store.log_artifacts(run_id, local_dir, artifact_path)


def log_text(text: str, artifact_file: str) -> None:
    """Write text to an artifact file of the active run."""
    store, run_id = _target()
    store.write_artifact(run_id, artifact_file, text)


def log_dict(dictionary: dict[str, Any], artifact_file: str) -> None:
    """Write a dict as JSON, or YAML for .yaml/.yml files, to an artifact of the active run."""
    if artifact_file.endswith((".yaml", ".yml")):
        text = dump_yaml(dictionary)
    else:
        text = json.dumps(dictionary, indent=2)
    log_text(text, artifact_file)


def get_artifact_uri(artifact_path: str | None = None) -> str:
    """The artifact URI of the active run (or of a path inside it)."""
    store, run_id = _target()
    base = store.artifact_dir(run_id)
    if artifact_path:
        return store.artifact_file(run_id, artifact_path).as_uri()
    return base.as_uri()


def set_experiment(experiment_name: str | None = None, experiment_id: str | None = None) -> Experiment:
    """Make an experiment active for new runs, creating it by name if needed."""
    global _experiment_id
    store = _store()
    if experiment_id is not None:
        experiment = store.get_experiment(str(experiment_id))
    elif experiment_name:
        experiment = store.get_experiment(store.get_or_create_experiment(experiment_name))
    else:
        raise InvalidInputError(
            "set_experiment needs an experiment_name or an experiment_id", hint="e.g. set_experiment('cnn')"
        )
    _experiment_id = experiment.experiment_id
    return experiment


def search_runs(
    experiment_ids: list[str] | None = None,
    filter_string: str = "",
    run_view_type: str | int = "active",
    max_results: int = 100000,
    order_by: list[str] | None = None,
    search_all_experiments: bool = False,
    experiment_names: list[str] | None = None,
) -> list[Run]:
    """Runs matching an MLflow filter (a list of Run, not a DataFrame)."""
    # imported here: the search index (sqlite3) loads only when a trainer searches
    from mlkit.tracking.search import complete_runs, search_rows

    store = _store()
    if experiment_names:
        ids = []
        for name in experiment_names:
            exp = store.get_experiment_by_name(name)
            if exp is not None:
                ids.append(exp.experiment_id)
        experiment_ids = (experiment_ids or []) + ids
    if not experiment_ids:
        if search_all_experiments:
            experiment_ids = [e.experiment_id for e in store.list_experiments("active")]
        else:
            experiment_ids = [_default_experiment_id(store)]
    rows = search_rows(store, experiment_ids, filter_string, order_by, run_view_type)[:max_results]
    return complete_runs(store, rows)
