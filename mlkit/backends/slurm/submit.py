"""Submitting runs to Slurm, cancelling them, following them.

`submit_run` is what `mlkit run --backend slurm` does after the same checks as a local run: create
the run SCHEDULED (params logged, tags `mlkit.slurm.job_id` / `mlkit.slurm.cluster`), write the
batch script and job.json into its artifacts (`slurm/`), `sbatch` it. `submit_tasks` is the
general form: several existing runs as one job array (`--array=0-N%K`, task i runs tasks[i]),
for sweeps.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlkit.backends.slurm import BACKEND_TAG, CLUSTER_TAG, FINAL_TAG, JOB_ID_TAG, STATE_TAG
from mlkit.backends.slurm.config import SlurmConfig, resolve_config
from mlkit.backends.slurm.script import (
    Task,
    check_path,
    gpu_count,
    job_spec,
    local_argv,
    looks_node_local,
    output_pattern,
    render_script,
    sbatch_lines,
)
from mlkit.errors import LaunchError, MlkitError, SlurmUnavailableError, UsageError
from mlkit.tracking.entities import FAILED, KILLED, SCHEDULED, TERMINAL_STATUSES

if TYPE_CHECKING:
    from mlkit.project.command import ResolvedCommand
    from mlkit.runner.options import RunOptions
    from mlkit.tracking.store import FileStore

Notify = Callable[[str], None]
SCRIPT_DIR = "slurm"  # artifacts/slurm/job.sh, job.json, slurm-<job>.out
_NOT_OWNED = ("mlkit.pid", "mlkit.pid_start", "mlkit.host", "mlkit.heartbeat")


@dataclass
class Submitted:
    """A run handed to Slurm: what `mlkit run --backend slurm` prints."""

    run_id: str
    experiment_id: str
    job_id: str
    cluster: str
    script: Path
    warnings: list[str] = field(default_factory=list)
    submit_s: float = 0.0


@dataclass(frozen=True)
class Prepared:
    """The Slurm side of a submission, checked before any run exists."""

    config: SlurmConfig
    gpus: int
    nodes: int


def prepare(options: RunOptions) -> Prepared:
    """Check what only the Slurm backend needs before anything is created: the backend config
    (exit 2), the GPU request (a number), --nodes, and that there is an sbatch to call (exit 68)."""
    prepared = _checked(options)
    # import budget: the Slurm commands load only for --backend slurm
    from mlkit.backends.slurm import commands

    if not commands.have("sbatch"):
        raise SlurmUnavailableError(
            "sbatch: not found: the Slurm client is not installed on this host; nothing was submitted",
            hint="run from a cluster login node, or install the client (Debian: apt-get install slurm-client)",
        )
    return prepared


def preview(options: RunOptions, store_root: Path) -> str:
    """What `--dry-run --backend slurm` shows: the batch script a submission would write, with the
    run's id and directory as placeholders. The same checks as a submission (exit 2), except that
    Slurm is not needed: nothing is asked of it and nothing is written."""
    prepared = _checked(options)
    run_id = "<run-id>"
    workdir = store_root / "<experiment-id>" / run_id / "artifacts" / SCRIPT_DIR
    task = Task(run_id, local_argv(options, run_id, store_root))
    job_name = f"mlkit-{Path(options.project_dir).resolve().name}-<run-name>"
    script, _ = _render(
        Batch([task], prepared.config, store_root, workdir, job_name, prepared.gpus, prepared.nodes)
    )
    return script


def _checked(options: RunOptions) -> Prepared:
    config = resolve_config(options.backend_config)
    # import budget: settings is loaded already by `mlkit run`
    from mlkit.settings import tracking_root

    check_path(tracking_root(options.store), "--store")  # the script names it: --output=...
    nodes = options.nodes or 1
    if options.run_id:
        raise UsageError(
            "--run-id with --backend slurm: the batch job itself runs the run with --run-id",
            hint="drop --run-id (a sweep submits existing runs with mlkit.backends.slurm.submit.submit_tasks)",
        )
    if nodes < 1:
        raise UsageError("--nodes: must be 1 or more", hint="e.g. --nodes 2")
    if options.nnodes or options.node_rank is not None or options.rdzv_endpoint:
        raise UsageError(
            "--nnodes/--node-rank/--rdzv-endpoint are set by the Slurm backend",
            hint="use --nodes K: mlkit starts one supervisor per node and the rendezvous itself",
        )
    if options.wait is not None or options.lock_wait is not None:
        raise UsageError("--wait: with --backend slurm, Slurm's queue does the waiting", hint="drop --wait")
    return Prepared(config, gpu_count(options.gpus), nodes)


def submit_run(
    options: RunOptions,
    prepared: Prepared,
    *,
    store: FileStore,
    experiment_id: str,
    command: ResolvedCommand,
    tags: dict[str, str],
    user: str | None,
    notify: Notify,
) -> Submitted:
    """Create the run SCHEDULED and submit its batch job (see the module doc)."""
    t0 = time.monotonic()
    check_path(store.root, "--store")  # before the run exists: bad input creates nothing
    tags = {k: v for k, v in tags.items() if k not in _NOT_OWNED}
    tags[BACKEND_TAG] = "slurm"
    run = store.create_run(
        experiment_id, run_name=options.run_name, tags=tags, user_id=user, status=SCHEDULED
    )
    run_id = run.info.run_id
    try:
        if command.params:
            store.log_params(run_id, command.params)
        task = Task(run_id, local_argv(options, run_id, store.root))
        workdir = Path(store.artifact_dir(run_id)) / SCRIPT_DIR
        job_name = f"mlkit-{Path(options.project_dir).resolve().name}-{run.info.run_name}"
        job_id, script = submit_tasks(
            Batch([task], prepared.config, store.root, workdir, job_name[:120], prepared.gpus, prepared.nodes)
        )
    except SlurmUnavailableError:
        with contextlib.suppress(MlkitError):
            store.delete_run(run_id)  # nothing was submitted: leave no SCHEDULED run behind
        raise
    except MlkitError as exc:
        with contextlib.suppress(MlkitError):
            store.set_tags(
                run_id, {"mlkit.failure_reason": "slurm_submit_failed", "mlkit.error": exc.message[:500]}
            )
            store.set_terminated(run_id, FAILED)
        raise
    except BaseException:  # Ctrl-C (Interrupted, KeyboardInterrupt) while sbatch may be running
        _interrupted(store, run_id, workdir=Path(store.artifact_dir(run_id)) / SCRIPT_DIR)
        raise
    # import budget: the Slurm commands load only for --backend slurm
    from mlkit.backends.slurm.commands import cluster_name

    cluster = cluster_name()
    store.set_tags(run_id, {JOB_ID_TAG: job_id, CLUSTER_TAG: cluster, STATE_TAG: "PENDING"})
    warnings = []
    if looks_node_local(store.root):
        warnings.append(
            f"the store {store.root} looks node-local: the job's nodes must see it at the same path "
            "(use a shared filesystem, e.g. --store /shared/mlruns)"
        )
    return Submitted(run_id, experiment_id, job_id, cluster, script, warnings, time.monotonic() - t0)


def _interrupted(store: FileStore, run_id: str, *, workdir: Path) -> None:
    """A submission stopped by a signal: before sbatch was called (no job.sh yet) the run is
    deleted; once it may have been, the run ends KILLED `interrupted`, never SCHEDULED forever."""
    with contextlib.suppress(Exception):
        if not (workdir / "job.sh").exists():
            store.delete_run(run_id)
            return
        store.set_tags(run_id, {"mlkit.failure_reason": "interrupted", STATE_TAG: "UNKNOWN"})
        store.set_terminated(run_id, KILLED)


@dataclass(frozen=True)
class Batch:
    """One batch job: existing runs (one task, or a job array of len(tasks) where task i runs
    tasks[i], at most `parallelism` at once) and how Slurm should run them. Its files go into
    `workdir` (job.sh, job.json, Slurm's output)."""

    tasks: Sequence[Task]
    config: SlurmConfig
    store_root: Path
    workdir: Path
    job_name: str
    gpus: int = 0
    nodes: int = 1
    parallelism: int | None = None
    python: str | None = None


def submit_tasks(batch: Batch) -> tuple[str, Path]:
    """Submit `batch`: write job.sh and job.json into its workdir, `sbatch` it; returns (job id,
    script path). Each run is tagged mlkit.slurm.job_id = JOB (one task) or JOB_i. When the job
    is not submitted (sbatch refused it, no Slurm) the runs are left to the caller."""
    tasks, workdir = batch.tasks, batch.workdir
    if not tasks:
        raise UsageError("nothing to submit", hint="give at least one task")
    check_path(workdir, "the job's directory")
    script, spec = _render(batch)
    spec_path = workdir / "job.json"
    workdir.mkdir(parents=True, exist_ok=True)
    # import budget: fsio loads only when a script is written
    from mlkit.fsio import atomic_write

    atomic_write(spec_path, json.dumps(spec, indent=1).encode())
    script_path = workdir / "job.sh"
    atomic_write(script_path, script.encode())
    os.chmod(script_path, 0o755)
    # import budget: the Slurm commands load only for --backend slurm
    from mlkit.backends.slurm import commands

    job_id = commands.sbatch(str(script_path))
    # import budget: the store loads only once a job was submitted
    from mlkit.tracking.store import FileStore

    store = FileStore(batch.store_root)
    for i, task in enumerate(tasks):  # one task too: a sweep's batch of one has no other tagger
        with contextlib.suppress(MlkitError):
            job = f"{job_id}_{i}" if len(tasks) > 1 else job_id
            store.set_tags(task.run_id, {JOB_ID_TAG: job, STATE_TAG: "PENDING"})
    return job_id, script_path


def _render(batch: Batch) -> tuple[str, dict[str, Any]]:
    """The batch script (job.sh) and what the job step reads (job.json)."""
    tasks, config, workdir = batch.tasks, batch.config, batch.workdir
    python = batch.python or config.python or sys.executable
    array = None
    output = output_pattern(workdir, "slurm-%j.out")
    if len(tasks) > 1:
        array = f"0-{len(tasks) - 1}" + (f"%{batch.parallelism}" if batch.parallelism else "")
        output = output_pattern(workdir, "slurm-%A_%a.out")
    spec = job_spec(
        tasks, store_root=batch.store_root, nodes=batch.nodes, rdzv_port=config.rdzv_port, python=python
    )
    spec["requeue"] = config.requeue
    directives = sbatch_lines(
        config, job_name=batch.job_name, output=output, gpus=batch.gpus, nodes=batch.nodes, array=array
    )
    runs = ", ".join(t.run_id for t in tasks[:3]) + (" ..." if len(tasks) > 3 else "")
    script = render_script(
        directives,
        python=python,
        spec_path=workdir / "job.json",
        setup=config.setup,
        comment=f"mlkit: run {runs}",
    )
    return script, spec


# ---------------------------------------------------------------------------------------- cancel
def cancel_runs(
    store: FileStore, run_ids: Sequence[str], *, notify: Notify | None = None
) -> list[tuple[str, str]]:
    """`scancel` the jobs of these Slurm runs (one call); (run id, job id) of each. A run without a
    job id is refused (UsageError) before anything is cancelled; one already ended is skipped, and
    so is one whose job Slurm no longer knows (`notify` says so)."""
    jobs: list[tuple[str, str]] = []
    for run_id in run_ids:
        run = store.get_run(run_id)
        if JOB_ID_TAG not in run.data.tags and run.data.tags.get(BACKEND_TAG) == "slurm":
            # import budget: status loads only for a run whose submitter died while sbatch ran
            from mlkit.backends.slurm.status import adopt_orphans

            run = adopt_orphans(store, [run])[0]
        job = run.data.tags.get(JOB_ID_TAG)
        if not job and run.data.tags.get(BACKEND_TAG) == "slurm":
            raise UsageError(
                f"run {run_id} was submitted to Slurm, but its job id was never recorded (the submission was "
                "stopped while sbatch ran) and Slurm holds no job of yours for it: nothing to cancel",
                hint="if the job was submitted it names the run's directory: squeue --me -O JobID,StdOut",
            )
        if not job:
            raise UsageError(
                f"run {run_id} is not a Slurm run (no {JOB_ID_TAG} tag)",
                hint="`runs cancel` stops Slurm jobs; stop a local run with Ctrl-C or kill its supervisor",
            )
        if run.info.status in TERMINAL_STATUSES and run.data.tags.get(FINAL_TAG):
            continue
        # import budget: the Slurm commands and status load only when there is something to cancel
        from mlkit.backends.slurm import commands
        from mlkit.backends.slurm.status import of_another_cluster

        if of_another_cluster(run, here := commands.cluster_name()):
            raise UsageError(
                f"run {run_id} is job {job} of cluster {run.data.tags[CLUSTER_TAG]!r}, and this host's Slurm "
                f"is cluster {here!r}: its job {job} is another job; nothing was cancelled",
                hint="cancel it from a login node of its cluster (or point SLURM_CONF at that cluster)",
            )
        jobs.append((run_id, job))
    if jobs:
        # import budget: the Slurm commands load only when there is something to cancel
        from mlkit.backends.slurm import commands

        unknown = set(commands.scancel([job for _, job in jobs]))
        for run_id, job in jobs:
            if job in unknown and notify is not None:
                notify(f"mlkit: run {run_id}: Slurm no longer knows job {job}; nothing to cancel")
        jobs = [(r, j) for r, j in jobs if j not in unknown]
    return jobs


def wait_for_end(
    store: FileStore,
    run_id: str,
    *,
    interval: float = 1.0,
    on_output: Callable[[bytes], None] | None = None,
    notify: Notify | None = None,
    timeout: float | None = None,
) -> int:
    """Stream the run's output.log from the store until Slurm and the run agree it ended; the
    exit code (status.exit_code_of). Reconciles every `interval` (one squeue call while queued).
    When Slurm cannot be asked, `notify` (else `on_output`) gets the warning once."""
    # import budget: status loads only when a run is followed
    from mlkit.backends.slurm.status import exit_code_for, exit_code_of, interpret, reconcile
    from mlkit.tracking.queries import log_path

    path = log_path(store, run_id)
    offset = 0
    deadline = None if timeout is None else time.monotonic() + timeout
    warned = False
    while True:
        run = store.get_run(run_id)
        result = reconcile(store, [run])
        run = result.runs[0]
        if result.warnings and not warned:
            warned = True  # once: it is asked again every `interval`
            for warning in result.warnings:
                if notify is not None:
                    notify(warning)
                elif on_output is not None:
                    on_output(f"mlkit: warning: {warning}\n".encode())
        chunk = b""
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            with open(path, "rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
        if chunk and on_output is not None:
            on_output(chunk)
            offset += len(chunk)
        if run.info.status in TERMINAL_STATUSES and (
            run.data.tags.get(FINAL_TAG) or (not result.warnings and run_id not in result.views)
        ):
            # Slurm recorded the end, or it has no record of the job any more (no accounting,
            # forgotten after MinJobAge) while the run recorded its own end: that end stands
            return exit_code_of(run)
        view = result.views.get(run_id)
        if view is not None and not run.data.tags.get(FINAL_TAG):
            # Slurm says the job ended but its word was not recorded (a store this user cannot
            # write: read-only, another user's): the end it makes, decided here without writing
            fresh = store.get_run(run_id)
            change = interpret(fresh, view)
            if change.final:
                return exit_code_for(change.status or fresh.info.status, {**fresh.data.tags, **change.tags})
        if deadline is not None and time.monotonic() > deadline:
            raise LaunchError(
                f"run {run_id} did not end in {timeout:g}s", hint="follow it with mlkit runs logs"
            )
        time.sleep(interval)
