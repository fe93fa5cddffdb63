"""The tracking entities, named as MLflow names them (Experiment, Run, RunInfo, RunData, Metric)."""

from __future__ import annotations

from dataclasses import dataclass, field

RUNNING, SCHEDULED, FINISHED, FAILED, KILLED = "RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"

# MLflow's RunStatus ints, as written in run meta.yaml.
STATUS_TO_INT = {RUNNING: 1, SCHEDULED: 2, FINISHED: 3, FAILED: 4, KILLED: 5}
INT_TO_STATUS = {v: k for k, v in STATUS_TO_INT.items()}
TERMINAL_STATUSES = frozenset({FINISHED, FAILED, KILLED})

ACTIVE, DELETED = "active", "deleted"


@dataclass
class Experiment:
    """One experiment: a directory under the store root with a meta.yaml."""

    experiment_id: str
    name: str
    artifact_location: str
    lifecycle_stage: str = ACTIVE
    creation_time: int | None = None
    last_update_time: int | None = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class RunInfo:
    """A run's meta.yaml: identity, status, times and where its artifacts live."""

    run_id: str
    run_uuid: str
    experiment_id: str
    run_name: str
    user_id: str
    status: str
    start_time: int | None
    end_time: int | None
    artifact_uri: str
    lifecycle_stage: str = ACTIVE


@dataclass
class RunData:
    """What a run logged: params, the latest value of each metric, tags."""

    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class Run:
    """A run: its info and its data."""

    info: RunInfo
    data: RunData


@dataclass
class Metric:
    """One logged metric value."""

    key: str
    value: float
    timestamp: int
    step: int


@dataclass
class FileInfo:
    """One entry of a run's artifact directory (path relative to the artifact root)."""

    path: str
    is_dir: bool
    file_size: int | None
