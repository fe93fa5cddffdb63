"""What `mlkit run` was asked to do: `RunOptions`, the checks that refuse bad input before anything
exists, and what the options settle without the store (the GPU request, the signal grace, the
heartbeat interval, the experiment named in the environment)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mlkit.errors import UsageError
from mlkit.runner.plan import DEFAULT_KILL_GRACE

if TYPE_CHECKING:  # annotations only: the GPU package loads when a run asks for GPUs
    from mlkit.gpu.select import GpuRequest

ENV_MANAGERS = ("local", "auto", "uv", "conda", "docker")


@dataclass(frozen=True, eq=False)
class RunOptions:
    """Everything `mlkit run` was asked to do (parsed, typed; durations in seconds)."""

    project_dir: Path
    entry_point: str = "main"
    params: dict[str, str] = field(default_factory=dict)
    experiment_name: str | None = None
    experiment_id: str | None = None
    run_name: str | None = None
    env_manager: str = "auto"
    conda_exe: str | None = None
    store: str | None = None
    timeout: float | None = None
    dry_run: bool = False
    gpus: str = "auto"
    min_free_memory: int | None = None
    max_gpu_util: float | None = None
    exclude_busy: bool = False
    wait: float | None = None
    system_metrics_interval: float = 5.0
    nnodes: int | None = None
    node_rank: int | None = None
    rdzv_endpoint: str | None = None
    nproc_per_node: int | None = None
    lock: str | None = None
    lock_wait: float | None = None
    skip_if_done: bool = False
    on_finish: str | None = None
    argv: tuple[str, ...] = ()  # mlkit's own command line, recorded as mlkit.argv
    strict_params: bool = False  # refuse -P names the entry point does not declare
    # --run-id: supervise this existing run (MLflow's `mlflow run --run-id`) instead of creating one;
    # a Slurm job and a sweep's trial start the run their submitter created SCHEDULED.
    run_id: str | None = None
    # docker_env projects (mlkit.runner.container): the engine, MLflow's --build-image and -A/--docker-args
    container_engine: str = "auto"
    build_image: bool = False
    docker_args: tuple[str, ...] = ()
    # --backend slurm (mlkit.backends.slurm): submit a batch job that runs this run with --run-id;
    # --backend-config KEY=VALUE,... or a JSON file of sbatch options; --nodes K for multi-node.
    backend: str = "local"
    backend_config: str | None = None
    nodes: int | None = None


def kill_grace() -> float:
    """Seconds between forwarding a signal and SIGKILL: MLKIT_KILL_GRACE, default 10."""
    try:
        return max(0.0, float(os.environ.get("MLKIT_KILL_GRACE", DEFAULT_KILL_GRACE)))
    except ValueError:
        return DEFAULT_KILL_GRACE


def heartbeat_interval() -> float:
    """Seconds between heartbeats: MLKIT_HEARTBEAT_INTERVAL, default 10."""
    try:
        return max(0.05, float(os.environ.get("MLKIT_HEARTBEAT_INTERVAL", "10")))
    except ValueError:
        return 10.0


def validate(options: RunOptions) -> None:
    """Refuse options that cannot make a run (UsageError), before anything is created."""
    check_env_manager(options.env_manager)
    if options.experiment_name is not None and options.experiment_id is not None:
        raise UsageError(
            "--experiment-name and --experiment-id were both given",
            hint="specify only one of them",
        )
    check_timeout(options.timeout)
    check_metrics_interval(options.system_metrics_interval)
    if options.nproc_per_node is not None and options.nproc_per_node < 1:
        raise UsageError("--nproc-per-node: must be 1 or more", hint="e.g. --nproc-per-node 2")
    if options.nnodes is not None:
        if options.nnodes < 1:
            raise UsageError("--nnodes: must be 1 or more", hint="e.g. --nnodes 2")
        if options.nnodes > 1 and not options.rdzv_endpoint:
            raise UsageError(
                f"--nnodes {options.nnodes} needs --rdzv-endpoint HOST[:PORT]",
                hint="run the same command on every node with --rdzv-endpoint node0:29400 and its --node-rank",
            )
    if options.node_rank is not None:
        if options.node_rank < 0 or options.node_rank >= (options.nnodes or 1):
            raise UsageError(
                f"--node-rank {options.node_rank}: must be from 0 to {(options.nnodes or 1) - 1}",
                hint="give --nnodes first; node ranks count from 0",
            )
    if options.lock is not None and not options.lock.strip():
        raise UsageError("--lock: the lock name is empty", hint="e.g. --lock nightly-train")
    _validate_run_id(options)


def check_env_manager(manager: str) -> None:
    """UsageError unless `manager` is one `--env-manager` takes (`mlkit run`, each sweep trial)."""
    if manager not in ENV_MANAGERS:
        raise UsageError(
            f"--env-manager {manager!r}: unknown manager", hint=f"use one of {', '.join(ENV_MANAGERS)}"
        )


def check_timeout(seconds: float | None, flag: str = "--timeout") -> None:
    """UsageError for a deadline of 0 s or less (None: no deadline)."""
    if seconds is not None and seconds <= 0:
        raise UsageError(f"{flag} {seconds:g}: must be more than 0 seconds", hint=f"e.g. {flag} 3h")


def check_metrics_interval(seconds: float | None) -> None:
    """UsageError for a negative `--system-metrics-interval` (None: the default)."""
    if seconds is not None and seconds < 0:
        raise UsageError(
            "--system-metrics-interval: cannot be negative",
            hint="seconds between samples; 0 turns sampling off",
        )


def _validate_run_id(options: RunOptions) -> None:
    if options.run_id is None:
        return
    if not options.run_id or not all(c in "0123456789abcdef" for c in options.run_id):
        raise UsageError(
            f"--run-id {options.run_id!r}: not a run id",
            hint="give the full 32-character id of an existing run",
        )
    for given, flag in ((options.run_name, "--run-name"), (options.skip_if_done, "--skip-if-done")):
        if given:
            raise UsageError(
                f"--run-id and {flag} were both given: --run-id runs a run that already exists",
                hint=f"drop {flag}",
            )


def experiment_from_env() -> tuple[str | None, str | None]:
    """(name, id) of the experiment MLKIT_/MLFLOW_EXPERIMENT_NAME or _ID names; a name wins."""
    name = os.environ.get("MLKIT_EXPERIMENT_NAME") or os.environ.get("MLFLOW_EXPERIMENT_NAME")
    if name:
        return name, None
    exp_id = os.environ.get("MLKIT_EXPERIMENT_ID") or os.environ.get("MLFLOW_EXPERIMENT_ID")
    return None, exp_id or None


def requested_experiment(
    experiment_id: str | None, experiment_name: str | None
) -> tuple[str | None, str | None]:
    """(id, name) of the experiment the flags ask for, else the environment's (experiment_from_env)."""
    if experiment_id is None and experiment_name is None:
        experiment_name, experiment_id = experiment_from_env()
    return experiment_id, experiment_name


def check_experiment_id(store_root: str | os.PathLike[str], experiment_id: str | None) -> None:
    """NotFoundError (exit 66) when the id names no experiment of the store at `store_root`, asked
    before the store is opened: opening creates a store that is not there (holding only Default,
    "0"), and a wrong id must leave nothing behind."""
    if experiment_id is not None and str(experiment_id) != "0":
        # import budget: the store module is loaded by the run's next step anyway
        from mlkit.tracking.store import experiment_dir

        experiment_dir(Path(store_root), str(experiment_id))


def describe_experiment(options: RunOptions) -> str:
    """The experiment a run would go to, as `--dry-run` shows it: its name, "id <x>" or Default."""
    if options.experiment_id is not None:
        return f"id {options.experiment_id}"
    if options.experiment_name is not None:
        return options.experiment_name
    name, exp_id = experiment_from_env()
    if name:
        return name
    return f"id {exp_id}" if exp_id else "Default"


def gpu_request(options: RunOptions) -> GpuRequest:
    """The parsed `--gpus` request, one GPU per rank with --nproc-per-node (UsageError if too few)."""
    # import budget: mlkit.gpu loads only when the --gpus request is parsed
    from mlkit.gpu import GpuRequest

    request = GpuRequest.parse(
        options.gpus,
        min_free_memory=options.min_free_memory,
        max_utilization=options.max_gpu_util,
        exclude_busy=options.exclude_busy,
    )
    ranks = options.nproc_per_node or 1
    if ranks > 1 and request.kind == "auto":  # one GPU per rank, or all ranks on the CPU
        return dataclasses.replace(request, count=ranks)
    named = request.count if request.kind == "count" else len(request.ids) if request.kind == "list" else None
    if named is not None and ranks > named:
        raise UsageError(
            f"--nproc-per-node {ranks} with --gpus {request.spec}: each rank needs a GPU of its own",
            hint=f"ask for --gpus {ranks}, or --gpus none to run the {ranks} ranks on the CPU",
        )
    return request
