"""`run_project`: the whole `mlkit run` sequence, from reading the project to recording how it ended.

1. load the project, resolve the entry point and parameters, parse the GPU request (bad input
   stops here and nothing has been created); `--dry-run` returns the plan here
2. take `--lock`; hash the environment; `--skip-if-done` fingerprints the run and looks for a
   finished twin (only then: hashing the project reads every file in it)
3. the store: mark lost runs, pick the experiment, create the run (RUNNING, every tag), log params
4. heartbeat; build/reuse the environment; reserve GPUs; plan; `execute` (see supervise.py)
5. record the status (any failure after the run exists marks it FAILED with a reason), run the
   `--on-finish` hook.

Beside it: `options` (RunOptions and the checks of step 1), `dryrun` (the plan `--dry-run` shows),
`summary` (what the terminal shows when the run ended).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal as signal_mod
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from mlkit import fsio, settings
from mlkit.errors import (
    EnvBuildError,
    EnvSpecError,
    GpuUnavailableError,
    GpuWaitTimeoutError,
    LaunchError,
    MlkitError,
    UsageError,
)
from mlkit.proc import describe
from mlkit.runner.options import (
    RunOptions,
    check_experiment_id,
    gpu_request,
    heartbeat_interval,
    kill_grace,
    requested_experiment,
    validate,
)
from mlkit.runner.plan import LaunchOptions, plan_run, signal_name
from mlkit.runner.signals import Interrupted, SignalRouter
from mlkit.runner.supervise import FAILED, KILLED, RunResult, execute, failed_node_tags, release_quietly
from mlkit.tracking.lost import ATTACH_LOCK  # in the run's directory: one supervisor attaches at a time

if TYPE_CHECKING:  # annotations only: `mlkit run` loads each of these when its step comes
    from mlkit.backends.slurm.submit import Prepared, Submitted
    from mlkit.env.container import ContainerRequest
    from mlkit.env.manager import PreparedEnv
    from mlkit.gpu.lease import GpuLease
    from mlkit.gpu.select import GpuRequest
    from mlkit.project.command import ResolvedCommand
    from mlkit.project.model import Project
    from mlkit.runner.dryrun import DryRun
    from mlkit.tracking.entities import Run
    from mlkit.tracking.store import FileStore

Notify = Callable[[str], None]


@dataclass(eq=False)
class Skipped:
    """`--skip-if-done` found a FINISHED run with the same fingerprint."""

    run_id: str
    experiment_id: str
    fingerprint: str


def _find_experiment(store: FileStore, options: RunOptions) -> tuple[str | None, str]:
    """(experiment id or None when it would be created, its name) without creating anything."""
    exp_id, name = requested_experiment(options.experiment_id, options.experiment_name)
    if exp_id is not None:
        return exp_id, store.get_experiment(exp_id).name  # NotFoundError (66) when missing
    if name is not None:
        found = store.get_experiment_by_name(name)
        return (found.experiment_id if found else None), name
    return "0", store.get_experiment("0").name


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


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
        if self.ident is not None:  # a secondary node never starts it
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
) -> DryRun | Skipped | RunResult | Submitted:
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
) -> DryRun | Skipped | RunResult | Submitted:
    # import budget: mlkit run loads each step's module when that step comes
    from mlkit.project import load_project

    # 1. validate everything before anything is created
    validate(options)
    # import budget: mlkit run loads each step's module when that step comes
    from mlkit.project import check_undeclared

    project = load_project(options.project_dir, options.entry_point)  # other entry points: warnings
    entry = project.entry_point(options.entry_point)
    command = entry.resolve(dict(options.params))
    warnings = project.warnings_for(options.entry_point)
    warnings += check_undeclared(entry, options.params, strict=options.strict_params)
    for warning in warnings:
        notify(f"mlkit: warning: {warning}")
    request = gpu_request(options)
    store_root = settings.tracking_root(options.store)
    slurm = _slurm_checks(options)  # --backend slurm: its own checks, before anything exists
    # docker_env: exit 73 now if no engine answers (under Slurm the job's node checks its own)
    container = _container(project, options, store_root, ask_engine=not options.dry_run and slurm is None)
    grace = kill_grace()
    launch = LaunchOptions(
        nproc_per_node=options.nproc_per_node,
        nnodes=options.nnodes,
        node_rank=options.node_rank,
        rdzv_endpoint=options.rdzv_endpoint,
        # `--timeout inf` (or longer than a thread can wait, ~292 years) is no deadline at all
        timeout=options.timeout
        if options.timeout is not None and options.timeout < threading.TIMEOUT_MAX
        else None,
        kill_grace=grace,
        stderr_tty=_stderr_is_tty(),
    )
    if (launch.nproc_per_node or 1) > 1 or (launch.nnodes or 1) > 1:
        # the launch layout asked for by name is checked before anything exists (a command torchrun
        # cannot take is exit 2 with no run); plan_run is pure, the run's own plan comes later
        plan_run(project, options.entry_point, dict(options.params), env=None, lease=None, store_root=store_root,
                 run_id="<run-id>", experiment_id="<experiment-id>", command=command, launch=launch)  # fmt: skip
    if options.dry_run:
        # import budget: dryrun loads only for --dry-run
        from mlkit.runner.dryrun import dry_run

        slurm_script = None
        if options.backend == "slurm":
            # import budget: the Slurm backend loads only for --backend slurm
            from mlkit.backends.slurm.submit import preview

            slurm_script = preview(options, store_root)
        return dry_run(
            project, options, command, store_root, launch, container=container, slurm_script=slurm_script
        )

    with contextlib.ExitStack() as stack:
        # 2. lock, env hash, skip-if-done
        held = None
        if options.lock:
            # import budget: mlkit run loads each step's module when that step comes
            from mlkit.runner.lock import run_lock

            held = stack.enter_context(
                run_lock(options.lock, wait=options.lock_wait, on_wait=_prefixed(notify, "mlkit: "))
            )
        # import budget: mlkit run loads each step's module when that step comes
        from mlkit.env.manager import env_hash

        ehash = env_hash(project.directory, project.env)
        _check_env_dir(project, options)
        # Hashing the project reads every file in it: only --skip-if-done pays for that.
        fingerprint = None
        if options.skip_if_done:
            # import budget: fingerprint loads only with --skip-if-done
            from mlkit.runner.fingerprint import compute_fingerprint

            fingerprint = compute_fingerprint(project.directory, options.entry_point, command.params, ehash)

        # 3. the store, the experiment, the run
        from mlkit.tracking.store import FileStore

        check_experiment_id(
            store_root, requested_experiment(options.experiment_id, options.experiment_name)[0]
        )
        store = FileStore(store_root)
        try:
            store.mark_lost_runs()
        except MlkitError as exc:  # someone else's broken run must not stop ours
            notify(f"mlkit: could not check for lost runs: {exc}")
        existing = _existing_run(store, options, command.params) if options.run_id else None
        exp_id, exp_name = (existing[1], existing[2]) if existing else _find_experiment(store, options)
        if fingerprint is not None and exp_id is not None:
            # import budget: fingerprint loads only with --skip-if-done
            from mlkit.runner.fingerprint import find_finished_run

            done = find_finished_run(store, exp_id, fingerprint)
            if done is not None:
                return Skipped(done.info.run_id, exp_id, fingerprint)
        if exp_id is None:
            exp_id = store.get_or_create_experiment(exp_name)

        user, tags = _new_run_tags(project, options, fingerprint, ehash)
        t0 = time.monotonic()
        if slurm is not None:  # --backend slurm: the run is created SCHEDULED and submitted
            # import budget: the Slurm backend loads only for --backend slurm
            from mlkit.backends.slurm.submit import submit_run

            return submit_run(options, slurm, store=store, experiment_id=exp_id, command=command, tags=tags,
                              user=user, notify=notify)  # fmt: skip
        router.mode = "defer"  # a signal now must not leave a half-written run behind
        if existing and _is_secondary(options):
            run = existing[0]  # the first node's supervisor owns the run's status and tags
        elif existing:
            run = _start_existing(store, existing[0], tags, options)
        else:
            run = store.create_run(exp_id, run_name=options.run_name, tags=tags, user_id=user)
        router.mode = "raise"
        if held is not None:
            with contextlib.suppress(Exception):
                held.set_run_id(run.info.run_id)
        created = _Created(project, command, request, store, run, exp_name, store_root, launch, t0, container,
                           secondary=_is_secondary(options))  # fmt: skip
        return _supervise_run(options, created, notify, stdout, stderr, router)


def _new_run_tags(
    project: Project, options: RunOptions, fingerprint: str | None, ehash: str | None
) -> tuple[str, dict[str, str]]:
    """(the user, every tag a run starts with): provenance, environment hash, ownership, heartbeat."""
    # import budget: mlkit run loads each step's module when that step comes
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
    return user, tags


def _check_env_dir(project: Project, options: RunOptions) -> None:
    """An env dir mlkit refuses (':' in it, another user's or writable by others) is refused before
    the run exists, for a run that may build or reuse an env there."""
    if project.env is not None and project.env.kind != "docker" and options.env_manager != "local":
        from mlkit.env.cache import env_root  # import budget: only a run that may build an env

        env_root()


def _is_secondary(options: RunOptions) -> bool:
    """`--run-id RUN --node-rank R` with R > 0: one more node of a multi-node run (a Slurm job's
    `--nodes K`); it runs its share of the torchrun launch and leaves the run to node 0."""
    return options.run_id is not None and (options.node_rank or 0) > 0


# Tags an earlier attempt of a run left that this attempt must not inherit (and, by prefix, every
# per-GPU tag: this attempt may have fewer GPUs).
_ATTEMPT_TAGS = (
    "mlkit.failure_reason", "mlkit.signal", "mlkit.exit_code", "mlkit.failed_node", "mlkit.error",
    "mlkit.rdzv_id", "mlkit.gpu.arbiter",
)  # fmt: skip
_ATTEMPT_PREFIXES = ("mlkit.gpu.",)


def _existing_run(store: FileStore, options: RunOptions, params: dict[str, str]) -> tuple[Run, str, str]:
    """`--run-id`: the run, its experiment id and name, once it is clear it may start here (with
    `params`, which it logs again: a value it logged differently is refused before it is touched)."""
    run_id = str(options.run_id)
    run = store.get_run(run_id)  # NotFoundError (66) when there is no such run
    exp_id = run.info.experiment_id
    exp_name = store.get_experiment(exp_id).name
    if options.experiment_id not in (None, exp_id) or options.experiment_name not in (None, exp_name):
        raise UsageError(
            f"--run-id {run_id}: the run belongs to experiment {exp_name!r} (id {exp_id})",
            hint="drop --experiment-name/--experiment-id, or give the run's own experiment",
        )
    _check_attachable(run, options)
    from mlkit.tracking.validation import param_value  # import budget: only for --run-id

    for key, value in params.items():
        logged = run.data.params.get(key)
        if logged is not None and logged != param_value(value):
            raise UsageError(
                f"--run-id {run_id}: -P {key}={value}, but the run was started with {key}={logged}"
                " (a run's params never change)",
                hint=f"give -P {key}={logged}, or start a new run (drop --run-id)",
            )
    return run, exp_id, exp_name


def _check_attachable(run: Run, options: RunOptions) -> None:
    """Refuse a run this supervisor may not take: FINISHED; RUNNING under a live supervisor; for a
    secondary node, one that is not SCHEDULED or RUNNING (node 0 has already ended it)."""
    # import budget: lost-run rules load only for --run-id
    from mlkit.tracking.lost import is_owner_gone

    run_id, status = run.info.run_id, run.info.status
    if _is_secondary(options) and status not in ("SCHEDULED", "RUNNING"):
        raise UsageError(
            f"--run-id {run_id} --node-rank {options.node_rank}: the run is {status}; its first node has ended it",
            hint="a secondary node joins a run that is SCHEDULED or RUNNING; start the whole job again",
        )
    if status == "FINISHED":
        raise UsageError(
            f"--run-id {run_id}: the run already FINISHED; a finished run is never run again",
            hint="start a new run (drop --run-id)",
        )
    if status == "RUNNING" and not _is_secondary(options) and not is_owner_gone(run.data.tags):
        owner = f"pid {run.data.tags.get('mlkit.pid', '?')} on {run.data.tags.get('mlkit.host', '?')}"
        raise UsageError(
            f"--run-id {run_id}: the run is RUNNING under another supervisor ({owner})",
            hint=f"wait for it to end, or stop it first (mlkit runs cancel {run_id})",
        )


def _start_existing(store: FileStore, run: Run, tags: dict[str, str], options: RunOptions) -> Run:
    """Make an existing run this supervisor's: its tags (keeping the name it has), RUNNING again.
    Under the run's attach lock, checked again: of two supervisors attaching to one run at once,
    the second finds it RUNNING under the first and is refused."""
    run_id = run.info.run_id
    tags = {k: v for k, v in tags.items() if k != "mlflow.runName"}
    lock = Path(store.run_dir(run_id)) / ATTACH_LOCK
    with fsio.locked(lock, wait=30, what=f"run {run_id}", hint="another supervisor is attaching to it; retry",
                     mode=0o644, other_owners=True):  # fmt: skip
        run = store.get_run(run_id)
        _check_attachable(run, options)
        stale = [k for k in run.data.tags if k in _ATTEMPT_TAGS or k.startswith(_ATTEMPT_PREFIXES)]
        for key in stale:
            with contextlib.suppress(MlkitError):  # already gone: fine
                store.delete_tag(run_id, key)
        store.set_tags(run_id, tags)
        store.restart_run(run_id)
    return store.get_run(run_id)


def _slurm_checks(options: RunOptions) -> Prepared | None:
    """--backend slurm: what only the Slurm backend checks, before anything is created."""
    if options.backend != "slurm" or options.dry_run:
        return None
    # import budget: the Slurm backend loads only for --backend slurm
    from mlkit.backends.slurm.submit import prepare

    return prepare(options)


def _container(
    project: Project, options: RunOptions, store_root: Path, *, ask_engine: bool
) -> ContainerRequest | None:
    """A docker_env run's container request, its engine checked before anything exists (without
    `ask_engine`, only its binary is looked for); None for other runs (container flags refused)."""
    docker = project.env is not None and project.env.kind == "docker"
    flags = options.build_image or options.docker_args or options.container_engine != "auto"
    if not (docker or flags or options.env_manager == "docker"):
        return None
    # import budget: the container module loads only for docker_env projects and their flags
    from mlkit.runner.container import preflight, wanted

    if not wanted(project, options):
        return None
    return preflight(project, options, store_root, ask_engine=ask_engine)


@dataclass(frozen=True, eq=False)
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
    container: ContainerRequest | None = None  # docker_env: what preflight settled
    secondary: bool = False  # a multi-node run's node rank > 0 (see _is_secondary)


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
    node = (options.node_rank or 0) if created.secondary else None  # None: this supervisor records the run
    try:
        if router.received is not None:  # arrived while the run was being created
            raise Interrupted(router.received)
        if not created.secondary:  # a multi-node run's other nodes leave the run to the first
            if command.params:
                store.log_params(run_id, command.params)
            heartbeat.start()

        env = _prepare_env(options, created, notify, pending)
        lease = _reserve(options, request, run_id, notify)
        pending.update(lease.tags or {})

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
        if created.secondary:
            plan = dataclasses.replace(plan, node_rank=options.node_rank or 0, secondary=True)
        else:
            pending["mlkit.command"] = json.dumps(plan.argv)
            if plan.rdzv_id:
                pending["mlkit.rdzv_id"] = plan.rdzv_id
            store.set_tags(run_id, pending)
        pending = {}
        for notice in plan.notices:
            notify(f"mlkit: {notice}")

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
        result = _end(
            store, run_id, exp_id, FAILED, reason, int(error.exit_code), t0, tags=pending, node=node
        )
        result.error = error
    except (Interrupted, KeyboardInterrupt) as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else int(signal_mod.SIGINT)
        name = signal_name(signum)
        result = _end(
            store, run_id, exp_id, KILLED, "signal", 128 + signum, t0, signal=name, tags=pending, node=node
        )
    except BaseException:
        reason = _failure_reason(RuntimeError(), child_started)
        _end(store, run_id, exp_id, FAILED, reason, 1, t0, tags=pending, node=node)
        raise
    finally:
        router.mode = "defer"
        heartbeat.stop()
        if lease is not None:
            release_quietly(lease)
    result.artifact_uri = run.info.artifact_uri
    result.experiment_id = exp_id
    if options.on_finish and node is None:
        _on_finish(options.on_finish, result, exp_id, store, notify)
    return result


def _prepare_env(
    options: RunOptions, created: _Created, notify: Notify, pending: dict[str, str]
) -> PreparedEnv:
    """Build or reuse the run's environment (step 4); its tags go into `pending`."""
    # import budget: mlkit run loads each step's module when that step comes
    from mlkit.env.manager import prepare_env

    project = created.project
    env = prepare_env(
        project.directory,
        project.env,
        options.env_manager,
        conda_exe=options.conda_exe,
        progress=_prefixed(notify, "mlkit: env: "),
        container=created.container,
    )
    if env.message:
        notify(f"mlkit: env: {env.message}")
    pending.update(dict(getattr(env, "tags", {}) or {}))
    if env.manager != "local":
        pending["mlflow.project.env"] = env.manager
    return env


def _reserve(options: RunOptions, request: GpuRequest, run_id: str, notify: Notify) -> GpuLease:
    """Reserve the run's GPUs (step 4), waiting for them when --wait says so."""
    # import budget: mlkit run loads each step's module when that step comes
    from mlkit.gpu import reserve

    lease = reserve(
        request, run_id=run_id, owner_pid=os.getpid(), wait=options.wait, on_wait=_prefixed(notify, "mlkit: ")
    )
    if request.kind == "all" and lease.gpus and (options.nproc_per_node or 1) > len(lease.gpus):
        release_quietly(lease)
        raise UsageError(
            f"--nproc-per-node {options.nproc_per_node} with --gpus all: this machine has "
            f"{len(lease.gpus)} GPU{'s' if len(lease.gpus) != 1 else ''}; each rank needs one",
            hint=f"use --nproc-per-node {len(lease.gpus)}, or --gpus none to run the ranks on the CPU",
        )
    if lease.notice:
        notify(f"mlkit: {lease.notice}")
    return lease


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
    node: int | None = None,
) -> RunResult:
    """Record a run that ended without its child's exit deciding it (`tags`: not yet written ones).
    On a multi-node run's secondary node (`node`: its rank) only the failed node is named."""
    tags = {**(tags or {}), "mlkit.failure_reason": reason}
    if signal:
        tags["mlkit.signal"] = signal
    if node is not None:
        tags = failed_node_tags(node, exit_code)
    with contextlib.suppress(Exception):  # the store may be the thing that failed
        store.set_tags(run_id, tags)
    with contextlib.suppress(Exception):
        if node is None:
            store.set_terminated(run_id, status)
    return RunResult(run_id, status, exit_code, time.monotonic() - t0, reason, exp_id, signal=signal)


def _on_finish(command: str, result: RunResult, exp_id: str, store: FileStore, notify: Notify) -> None:
    """Run the --on-finish hook; its failure is reported, never fatal."""
    try:
        # import budget: mlkit run loads each step's module when that step comes
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
