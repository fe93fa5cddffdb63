"""`run_project`: the whole `mlkit run` sequence, from reading the project to recording how it ended.

1. load the project, resolve the entry point and parameters, parse the GPU request (bad input
   stops here and nothing has been created); `--dry-run` returns the plan here
2. take `--lock`; hash the environment; `--skip-if-done` fingerprints the run and looks for a
   finished twin (only then: hashing the project reads every file in it)
3. the store: mark lost runs, pick the experiment, create the run (RUNNING, every tag), log params
4. heartbeat; build/reuse the environment; reserve GPUs; plan; `execute` (see supervise.py)
5. record the status (any failure after the run exists marks it FAILED with a reason), run the
   `--on-finish` hook.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from mlkit import settings
from mlkit.errors import (
    EnvBuildError,
    EnvSpecError,
    GpuUnavailableError,
    GpuWaitTimeoutError,
    LaunchError,
    MlkitError,
    UsageError,
)
from mlkit.runner.plan import DEFAULT_KILL_GRACE, LaunchOptions, RunPlan, plan_run, signal_name
from mlkit.runner.supervise import (
    FAILED,
    KILLED,
    Interrupted,
    RunResult,
    SignalRouter,
    execute,
    release_quietly,
)

if TYPE_CHECKING:  # annotations only: `mlkit run` loads each of these when its step comes
    from mlkit.gpu.ledger import GpuLease
    from mlkit.gpu.select import GpuRequest
    from mlkit.project.model import Project, ResolvedCommand
    from mlkit.tracking.entities import Run
    from mlkit.tracking.store import FileStore

ENV_MANAGERS = ("local", "auto", "uv", "conda")
Notify = Callable[[str], None]


@dataclass(frozen=True)
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


@dataclass
class DryRun:
    """What `--dry-run` shows: the resolved plan; nothing was created."""

    plan: RunPlan
    experiment: str  # "name" or "id <x>" as it would be picked
    store_root: Path
    env_manager: str
    gpus: str


@dataclass
class Skipped:
    """`--skip-if-done` found a FINISHED run with the same fingerprint."""

    run_id: str
    experiment_id: str
    fingerprint: str


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


def _validate(options: RunOptions) -> None:
    if options.env_manager not in ENV_MANAGERS:
        raise UsageError(
            f"--env-manager {options.env_manager!r}: unknown manager",
            hint=f"use one of {', '.join(ENV_MANAGERS)}",
        )
    if options.experiment_name is not None and options.experiment_id is not None:
        raise UsageError(
            "--experiment-name and --experiment-id were both given",
            hint="specify only one of them",
        )
    if options.timeout is not None and options.timeout <= 0:
        raise UsageError(
            f"--timeout {options.timeout:g}: must be more than 0 seconds", hint="e.g. --timeout 3h"
        )
    if options.system_metrics_interval < 0:
        raise UsageError(
            "--system-metrics-interval: cannot be negative",
            hint="seconds between samples; 0 turns sampling off",
        )
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


def _experiment_from_env() -> tuple[str | None, str | None]:
    name = os.environ.get("MLKIT_EXPERIMENT_NAME") or os.environ.get("MLFLOW_EXPERIMENT_NAME")
    if name:
        return name, None
    exp_id = os.environ.get("MLKIT_EXPERIMENT_ID") or os.environ.get("MLFLOW_EXPERIMENT_ID")
    return None, exp_id or None


def _describe_experiment(options: RunOptions) -> str:
    if options.experiment_id is not None:
        return f"id {options.experiment_id}"
    if options.experiment_name is not None:
        return options.experiment_name
    name, exp_id = _experiment_from_env()
    if name:
        return name
    return f"id {exp_id}" if exp_id else "Default"


def _find_experiment(store: FileStore, options: RunOptions) -> tuple[str | None, str]:
    """(experiment id or None when it would be created, its name) without creating anything."""
    exp_id = options.experiment_id
    name = options.experiment_name
    if exp_id is None and name is None:
        name, exp_id = _experiment_from_env()
    if exp_id is not None:
        return exp_id, store.get_experiment(exp_id).name  # NotFoundError (66) when missing
    if name is not None:
        found = store.get_experiment_by_name(name)
        return (found.experiment_id if found else None), name
    return "0", store.get_experiment("0").name


def _dry_python(project: Project, manager: str) -> str | None:
    """The interpreter a run would start, when known without building anything: this one for
    --env-manager local, without an environment file, or when `auto` finds this env satisfies it."""
    if manager == "local" or project.env is None:
        return sys.executable
    if manager == "auto" and project.env.kind != "docker":
        from mlkit.env.check import check_current
        from mlkit.env.manager import load_spec

        spec = load_spec(project.directory, project.env)
        if spec is None or check_current(spec).satisfied:
            return sys.executable
    return None


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def _gpu_request(options: RunOptions) -> GpuRequest:
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


class _Heartbeat(threading.Thread):
    """Refreshes the run's mlkit.heartbeat tag until stopped."""

    def __init__(self, store: FileStore, run_id: str, interval: float):
        super().__init__(name="mlkit-heartbeat", daemon=True)
        self.store, self.run_id, self.interval = store, run_id, interval
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            with contextlib.suppress(Exception):  # a missed beat is fine; a crash here is not
                self.store.set_tag(self.run_id, "mlkit.heartbeat", str(int(time.time() * 1000)))

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=2)


def _prefixed(notify: Notify, prefix: str) -> Notify:
    return lambda message: notify(prefix + message)


def _failure_reason(error: BaseException, child_started: bool) -> str:
    if isinstance(error, (EnvBuildError, EnvSpecError)):
        return "env_build_failed"
    if isinstance(error, GpuWaitTimeoutError):
        return "gpu_wait_timeout"
    if isinstance(error, GpuUnavailableError):
        return "gpu_unavailable"
    if isinstance(error, LaunchError):
        return "launch_failed"
    return "internal_error" if child_started else "launch_failed"


def run_project(
    options: RunOptions,
    *,
    notify: Notify | None = None,
    stdout: IO[bytes] | None = None,
    stderr: IO[bytes] | None = None,
) -> DryRun | Skipped | RunResult:
    """Do everything `mlkit run` does. Lines for the user go to `notify`, the child's output to
    `stdout`/`stderr` (binary). Raises MlkitError for bad input (nothing created) and for failures
    before the run exists; afterwards failures come back as a RunResult with `error` set."""
    notify = notify or (lambda _m: None)
    with SignalRouter() as router:
        return _run(options, notify, stdout, stderr, router)


def _run(
    options: RunOptions,
    notify: Notify,
    stdout: IO[bytes] | None,
    stderr: IO[bytes] | None,
    router: SignalRouter,
) -> DryRun | Skipped | RunResult:
    from mlkit.project import load_project

    # 1. validate everything before anything is created
    _validate(options)
    from mlkit.project import check_undeclared

    project = load_project(options.project_dir, options.entry_point)  # other entry points: warnings
    entry = project.entry_point(options.entry_point)
    command = entry.resolve(dict(options.params))
    warnings = project.warnings_for(options.entry_point)
    warnings += check_undeclared(entry, options.params, strict=options.strict_params)
    if project.env is not None and project.env.kind == "docker" and options.env_manager != "local":
        raise EnvSpecError(  # as prepare_env says it, but before anything exists, dry run or not
            f"MLproject: docker_env (image {project.env.image}) is not run by mlkit",
            hint="use --env-manager local to run the entry point in the current environment",
        )
    for warning in warnings:
        notify(f"mlkit: warning: {warning}")
    request = _gpu_request(options)
    store_root = settings.tracking_root(options.store)
    grace = kill_grace()
    launch = LaunchOptions(
        nproc_per_node=options.nproc_per_node,
        nnodes=options.nnodes,
        node_rank=options.node_rank,
        rdzv_endpoint=options.rdzv_endpoint,
        timeout=options.timeout,
        kill_grace=grace,
        stderr_tty=_stderr_is_tty(),
    )
    if options.dry_run:
        from mlkit.env.manager import env_hash

        env_hash(project.directory, project.env)  # read and check the env file as the run will
        plan = plan_run(
            project,
            options.entry_point,
            dict(options.params),
            env=None,
            lease=None,
            store_root=store_root,
            run_id="<run-id>",
            experiment_id="<experiment-id>",
            command=command,
            env_manager=options.env_manager,
            dry_python=_dry_python(project, options.env_manager),
            launch=launch,
        )
        return DryRun(plan, _describe_experiment(options), store_root, options.env_manager, options.gpus)

    with contextlib.ExitStack() as stack:
        # 2. lock, env hash, skip-if-done
        held = None
        if options.lock:
            from mlkit.runner.lock import run_lock

            held = stack.enter_context(
                run_lock(options.lock, wait=options.lock_wait, on_wait=_prefixed(notify, "mlkit: "))
            )
        from mlkit.env.manager import env_hash

        ehash = env_hash(project.directory, project.env)
        # Hashing the project reads every file in it: only --skip-if-done pays for that.
        fingerprint = None
        if options.skip_if_done:
            from mlkit.runner.fingerprint import compute_fingerprint

            fingerprint = compute_fingerprint(project.directory, options.entry_point, command.params, ehash)

        # 3. the store, the experiment, the run
        from mlkit.tracking.store import FileStore

        store = FileStore(store_root)
        try:
            store.mark_lost_runs()
        except MlkitError as exc:  # someone else's broken run must not stop ours
            notify(f"mlkit: could not check for lost runs: {exc}")
        exp_id, exp_name = _find_experiment(store, options)
        if fingerprint is not None and exp_id is not None:
            from mlkit.runner.fingerprint import find_finished_run

            done = find_finished_run(store, exp_id, fingerprint)
            if done is not None:
                return Skipped(done.info.run_id, exp_id, fingerprint)
        if exp_id is None:
            exp_id = store.get_or_create_experiment(exp_name)

        from mlkit.runner.provenance import current_user, ownership_tags, run_tags

        user = current_user()
        tags = run_tags(
            project_dir=project.directory,
            entry_point=options.entry_point,
            mlkit_argv=list(options.argv),
            command=None,
            mlproject_file=project.file,
            env_file=getattr(project.env, "path", None),
            fingerprint=fingerprint,
            user=user,
        )
        if ehash:
            tags["mlkit.env_hash"] = ehash
        tags.update(ownership_tags())
        tags["mlkit.heartbeat"] = str(int(time.time() * 1000))
        t0 = time.monotonic()
        router.mode = "defer"  # a signal now must not leave a half-written run behind
        run = store.create_run(exp_id, run_name=options.run_name, tags=tags, user_id=user)
        router.mode = "raise"
        if held is not None:
            with contextlib.suppress(Exception):
                held.set_run_id(run.info.run_id)
        created = _Created(project, command, request, store, run, exp_name, store_root, launch, t0)
        return _supervise_run(options, created, notify, stdout, stderr, router)


@dataclass(frozen=True)
class _Created:
    """What steps 1 to 3 settled for a run that now exists in the store."""

    project: Project
    command: ResolvedCommand
    request: GpuRequest
    store: FileStore
    run: Run
    exp_name: str
    store_root: Path
    launch: LaunchOptions
    t0: float  # time.monotonic() when the run was created


def _supervise_run(
    options: RunOptions,
    created: _Created,
    notify: Notify,
    stdout: IO[bytes] | None,
    stderr: IO[bytes] | None,
    router: SignalRouter,
) -> RunResult:
    """Steps 4 and 5, for a run that exists: whatever happens, it ends in a terminal status."""
    project, command, request, store, run = (
        created.project, created.command, created.request, created.store, created.run,
    )  # fmt: skip
    exp_name, store_root, t0 = created.exp_name, created.store_root, created.t0
    run_id, exp_id = run.info.run_id, run.info.experiment_id
    heartbeat = _Heartbeat(store, run_id, heartbeat_interval())
    lease: GpuLease | None = None
    result: RunResult | None = None
    child_started = False
    pending: dict[str, str] = {}  # tags learnt while setting up, written together (or by _end)
    try:
        if router.received is not None:  # arrived while the run was being created
            raise Interrupted(router.received)
        if command.params:
            store.log_params(run_id, command.params)
        heartbeat.start()

        from mlkit.env.manager import prepare_env

        env = prepare_env(
            project.directory,
            project.env,
            options.env_manager,
            conda_exe=options.conda_exe,
            progress=_prefixed(notify, "mlkit: env: "),
        )
        if env.message:
            notify(f"mlkit: env: {env.message}")
        env_tags = dict(getattr(env, "tags", {}) or {})
        if env.manager != "local":
            env_tags["mlflow.project.env"] = env.manager
        pending.update(env_tags)

        from mlkit.gpu import reserve

        lease = reserve(
            request,
            run_id=run_id,
            owner_pid=os.getpid(),
            wait=options.wait,
            on_wait=_prefixed(notify, "mlkit: "),
        )
        if request.kind == "all" and lease.gpus and (options.nproc_per_node or 1) > len(lease.gpus):
            raise UsageError(
                f"--nproc-per-node {options.nproc_per_node} with --gpus all: this machine has "
                f"{len(lease.gpus)} GPU{'s' if len(lease.gpus) != 1 else ''}; each rank needs one",
                hint=f"use --nproc-per-node {len(lease.gpus)}, or --gpus none to run the ranks on the CPU",
            )
        pending.update(lease.tags or {})
        if lease.notice:
            notify(f"mlkit: {lease.notice}")

        if any(t == "path" for t in command.types.values()):  # remote `path` values are downloaded now
            command = project.entry_point(options.entry_point).resolve(
                dict(options.params), storage_dir=settings.cache_dir() / "downloads" / run_id
            )
        plan = plan_run(
            project,
            options.entry_point,
            dict(options.params),
            env=env,
            lease=lease,
            store_root=store_root,
            run_id=run_id,
            experiment_id=exp_id,
            command=command,
            artifact_dir=store.artifact_dir(run_id),
            launch=created.launch,
        )
        import json

        pending["mlkit.command"] = json.dumps(plan.argv)
        if plan.rdzv_id:
            pending["mlkit.rdzv_id"] = plan.rdzv_id
        store.set_tags(run_id, pending)
        pending = {}
        for notice in plan.notices:
            notify(f"mlkit: {notice}")

        from mlkit.runner.proc import describe

        notify(f"mlkit: run {run_id} (experiment {exp_name}) started: {describe(plan.argv)}")
        child_started = True
        result = execute(
            plan,
            store,
            lease=lease,
            metrics_interval=options.system_metrics_interval,
            gpu_uuids=[g.uuid for g in lease.gpus],
            stdout=stdout,
            stderr=stderr,
            notify=notify,
            router=router,
            started_at=t0,
        )
    except MlkitError as error:
        reason = _failure_reason(error, child_started)
        result = _end(store, run_id, exp_id, FAILED, reason, int(error.exit_code), t0, tags=pending)
        result.error = error
    except (Interrupted, KeyboardInterrupt) as exc:
        import signal as signal_mod

        signum = exc.signum if isinstance(exc, Interrupted) else int(signal_mod.SIGINT)
        name = signal_name(signum)
        result = _end(store, run_id, exp_id, KILLED, "signal", 128 + signum, t0, signal=name, tags=pending)
    except BaseException:
        reason = _failure_reason(RuntimeError(), child_started)
        _end(store, run_id, exp_id, FAILED, reason, 1, t0, tags=pending)
        raise
    finally:
        router.mode = "defer"
        heartbeat.stop()
        if lease is not None:
            release_quietly(lease)
    result.artifact_uri = run.info.artifact_uri
    result.experiment_id = exp_id
    if options.on_finish:
        _on_finish(options.on_finish, result, exp_id, store, notify)
    return result


def _end(
    store: FileStore,
    run_id: str,
    exp_id: str,
    status: str,
    reason: str,
    exit_code: int,
    t0: float,
    *,
    signal: str | None = None,
    tags: dict[str, str] | None = None,
) -> RunResult:
    """Record a run that ended without its child's exit deciding it (`tags`: not yet written ones)."""
    tags = {**(tags or {}), "mlkit.failure_reason": reason}
    if signal:
        tags["mlkit.signal"] = signal
    with contextlib.suppress(Exception):  # the store may be the thing that failed
        store.set_tags(run_id, tags)
    with contextlib.suppress(Exception):
        store.set_terminated(run_id, status)
    return RunResult(run_id, status, exit_code, time.monotonic() - t0, reason, exp_id, signal=signal)


def _on_finish(command: str, result: RunResult, exp_id: str, store: FileStore, notify: Notify) -> None:
    """Run the --on-finish hook; its failure is reported, never fatal."""
    try:
        from mlkit.runner.hooks import run_on_finish

        outcome = run_on_finish(
            command,
            run_id=result.run_id,
            status=result.status,
            exit_code=result.exit_code,
            run_dir=store.run_dir(result.run_id),
            experiment_id=exp_id,
        )
    except Exception as exc:
        notify(f"mlkit: --on-finish failed: {exc}")
        return
    if outcome.error:
        notify(f"mlkit: {outcome.error}")
    if outcome.output.strip():
        notify(outcome.output.rstrip())
    # Keep what the hook said beside the run's own output, so a cron job's notifications can be audited.
    with contextlib.suppress(OSError):
        log = Path(store.artifact_dir(result.run_id)) / "logs" / "on-finish.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"$ {command}\n{outcome.output}exit {outcome.exit_code}\n")


def closing_summary(store_root: Path, result: RunResult, project_name: str | None = None) -> dict[str, Any]:
    """What the end of `mlkit run` shows besides the status: the final value of the run's key
    metrics (model metrics, validation/test first, at most 8), the URIs of the models it logged,
    and the commands to run next. Read from the store after the run ended (only on a terminal or
    with --json, so a plain run never loads the column rules)."""
    import json

    from mlkit.tracking.columns import is_model_metric, metric_order
    from mlkit.tracking.store import FileStore

    run_id = result.run_id
    metrics: dict[str, float] = {}
    models: list[str] = []
    with contextlib.suppress(MlkitError, OSError, ValueError):
        run = FileStore(store_root).get_run(run_id)
        keys = sorted((k for k in run.data.metrics if is_model_metric(k)), key=metric_order)[:8]
        metrics = {k: run.data.metrics[k] for k in keys}
        history = json.loads(run.data.tags.get("mlflow.log-model.history") or "[]")  # models.format
        paths = (
            [e.get("artifact_path") for e in history if isinstance(e, dict)]
            if isinstance(history, list)
            else []
        )
        models = [f"runs:/{run_id}/{p}" for p in dict.fromkeys(paths) if p]
    next_commands = [f"mlkit runs show {run_id}"]
    if result.status != "FINISHED":
        next_commands.append(f"mlkit runs logs {run_id}")
    elif models:
        next_commands.append(f"mlkit models register {models[-1]} {project_name or 'NAME'}")
    return {
        "metrics": metrics,
        "model_uri": models[-1] if models else None,
        "models": models,
        "next": next_commands,
    }
