"""Trials on a Slurm cluster: the trials the driver claims are submitted as one job array
(`sbatch --array=0-N%K`, task i runs `mlkit run --run-id TRIAL_i --backend local` in its own
allocation) through mlkit.backends.slurm.submit.submit_tasks. A grid or random sweep is one array
of every trial; a TPE sweep submits a batch of K trials at a time as the sampler suggests them.
The driver watches the runs in the store (Slurm's view reconciled by mlkit.backends.slurm.status)
and stops a trial (pruning, Ctrl-C) with `scancel --signal=TERM --batch JOB_i`.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlkit.errors import MlkitError
from mlkit.sweep.launch import TrialHandle, TrialLaunch

TERMINAL = ("FINISHED", "FAILED", "KILLED")
REFRESH_S = 2.0


def task_argv(trial: TrialLaunch) -> tuple[str, ...]:
    """`mlkit run` flags for one trial inside its allocation: its GPUs are the allocation's."""
    argv = ["run", trial.project_dir, "-e", trial.entry_point, "--run-id", trial.run_id, "--backend", "local",
            "--store", trial.store, "--env-manager", trial.env_manager,
            "--gpus", "all" if trial.gpus > 0 else "none"]  # fmt: skip
    for key, value in trial.params.items():
        argv += ["-P", f"{key}={value}"]
    if trial.timeout is not None:
        argv += ["--timeout", f"{max(1, int(trial.timeout))}s"]
    if trial.system_metrics_interval is not None:
        argv += ["--system-metrics-interval", f"{trial.system_metrics_interval:g}"]
    return tuple(argv)


@dataclass
class SlurmTrial:
    """One array task: done when its run is FINISHED/FAILED/KILLED in the store."""

    run_id: str
    launcher: SlurmLauncher

    def poll(self) -> int | None:
        return 0 if self.launcher.status(self.run_id) in TERMINAL else None

    def _job(self) -> str | None:
        # import budget: the Slurm backend loads only for --backend slurm
        from mlkit.backends.slurm import JOB_ID_TAG

        return self.launcher.store.get_run(self.run_id).data.tags.get(JOB_ID_TAG)

    def stop(self) -> None:
        # import budget: the Slurm backend loads only for --backend slurm
        from mlkit.backends.slurm import commands

        job = self._job()
        if job:
            with contextlib.suppress(MlkitError):  # SIGTERM to the batch shell: job.py forwards it
                commands.scancel([job], signal="TERM", batch=True)
                if self.launcher.status(self.run_id) == "SCHEDULED":
                    commands.scancel([job])  # still pending: nothing to forward to

    def kill(self) -> None:
        # import budget: the Slurm backend loads only for --backend slurm
        from mlkit.backends.slurm import commands

        job = self._job()
        if job:
            with contextlib.suppress(MlkitError):
                commands.scancel([job])


class SlurmLauncher:
    """Submits claimed trials as job arrays, at most `parallel` tasks of each running at once."""

    name = "slurm"

    def __init__(self, spec: dict[str, Any], store: Any = None, sweep_id: str | None = None) -> None:
        # import budget: the Slurm backend loads only for --backend slurm
        from mlkit.backends.slurm.config import resolve_config

        self.spec = spec
        self.config = resolve_config(spec.get("backend_config"))
        self.parallel = int(spec["parallel"])
        self.static = spec.get("static") is not None
        self.store = store
        self.sweep_id = sweep_id
        self.batches = 0
        self._seen: dict[str, str] = {}
        self._refreshed = 0.0

    def bind(self, store: Any, sweep_id: str) -> None:
        self.store, self.sweep_id = store, sweep_id

    def capacity(self, running: int) -> int:
        # A grid / random sweep goes in one array (Slurm's %K keeps K running); TPE in batches of K.
        return 1_000_000 if self.static else max(0, self.parallel - running)

    def start(self, trials: list[TrialLaunch]) -> list[TrialHandle]:
        # import budget: the Slurm backend loads only for --backend slurm
        from mlkit.backends.slurm.script import Task
        from mlkit.backends.slurm.submit import Batch, submit_tasks

        assert self.store is not None and self.sweep_id is not None  # bound by the driver
        tasks = [Task(run_id=t.run_id, argv=task_argv(t)) for t in trials]
        self.batches += 1
        workdir = (
            Path(self.store.artifact_dir(self.sweep_id))
            / "slurm"
            / f"batch-{self.batches}-{int(time.time())}"
        )
        try:
            submit_tasks(
                Batch(
                    tasks,
                    config=self.config,
                    store_root=Path(self.store.root),
                    workdir=workdir,
                    job_name=f"sweep-{self.sweep_id[:8]}",
                    gpus=int(self.spec.get("gpus_per_trial") or 0),
                    parallelism=min(self.parallel, len(tasks)),
                )
            )
        except MlkitError as exc:  # nothing was submitted: no job will ever end these trials
            for task in tasks:
                with contextlib.suppress(MlkitError):
                    self.store.set_tags(
                        task.run_id,
                        {"mlkit.failure_reason": "slurm_submit_failed", "mlkit.error": exc.message[:500]},
                    )
                    self.store.set_terminated(task.run_id, "FAILED")
            raise
        return [SlurmTrial(t.run_id, self) for t in trials]

    def adopt(self, run: Any) -> TrialHandle | None:
        """A trial an earlier driver submitted (it has a job id): watched, not submitted again."""
        # import budget: the Slurm backend loads only for --backend slurm
        from mlkit.backends.slurm import JOB_ID_TAG

        return SlurmTrial(run.info.run_id, self) if JOB_ID_TAG in run.data.tags else None

    def status(self, run_id: str) -> str:
        """The run's status, with Slurm asked (one squeue + sacct for all watched runs) every 2 s,
        so a job that died before its supervisor took the run still ends."""
        now = time.monotonic()
        if now - self._refreshed >= REFRESH_S:
            self._refreshed = now
            self._refresh()
        return self._seen.get(run_id) or str(self.store.get_run(run_id).info.status)

    def _refresh(self) -> None:
        # import budget: the Slurm backend loads only for --backend slurm
        from mlkit.backends.slurm.status import reconcile
        from mlkit.sweep.records import trial_runs

        runs = [r for r in trial_runs(self.store, str(self.sweep_id)) if r.info.status not in TERMINAL]
        with contextlib.suppress(MlkitError):
            if runs:
                runs = list(reconcile(self.store, runs).runs)
        self._seen = {r.info.run_id: r.info.status for r in runs}


def slurm_launcher(spec: dict[str, Any]) -> SlurmLauncher:
    """The launcher for `--backend slurm`: checks the site's Slurm config (exit 2 when bad) and
    that there is an sbatch to call, before anything is created."""
    # import budget: the Slurm backend loads only for --backend slurm
    from mlkit.backends.slurm import commands
    from mlkit.errors import SlurmUnavailableError

    launcher = SlurmLauncher(spec)
    if not commands.have("sbatch"):
        raise SlurmUnavailableError("--backend slurm: sbatch is not on PATH",
                                    hint="run mlkit sweep on a Slurm login node, or install Slurm's client tools")  # fmt: skip
    return launcher
