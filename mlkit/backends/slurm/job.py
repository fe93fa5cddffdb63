"""What a Slurm batch script executes inside the allocation: `python -m mlkit.backends.slurm.job
JOB_JSON [--node]`.

It picks its task (the array index, or the only one), records the job's raw id, nodes and restart
count on the run, and starts `python -m mlkit run ... --run-id RUN --backend local` (the ordinary
supervisor) as its child. USR2 (sent by Slurm `--signal=B:USR2@grace` before the time limit or a
preemption) is forwarded to the supervisor as SIGINT, the trainers' checkpoint signal; once the
run has stopped KILLED (not when it ended FINISHED or FAILED on its own), a requeueable job asks
Slurm to requeue it and, once Slurm agreed, records `preempted` + `requeued` and puts the run back
to SCHEDULED. The next start attaches to the same run with the same
argv (a run's params never change) and sets MLKIT_RESUME_RUN_ID=<run id> for the entry point (with
Slurm's SLURM_RESTART_COUNT), so a trainer can continue from its own checkpoint.

With `nodes > 1` the batch step starts one `--node` copy per node with srun; each runs its
supervisor with the torchrun rendezvous on the first node. The batch step sends srun USR2 (srun
passes it to every node's copy, which turns it into its supervisor's SIGINT): a single SIGINT
would only make srun print its tasks' status.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from mlkit import proc
from mlkit.backends.slurm import (
    BACKEND_TAG,
    CLUSTER_TAG,
    JOB_ID_TAG,
    NODES_TAG,
    REQUEUED_TAG,
    RESTARTS_TAG,
    STATE_TAG,
)
from mlkit.backends.slurm.commands import hostnames, slurm
from mlkit.backends.slurm.script import node_argv, srun_argv, supervisor_argv
from mlkit.errors import MlkitError

RAW_JOB_TAG = "mlkit.slurm.raw_job_id"


def _task(spec: dict[str, Any]) -> dict[str, Any]:
    tasks = spec["tasks"]
    if len(tasks) == 1:
        return tasks[0]
    return tasks[int(os.environ.get("SLURM_ARRAY_TASK_ID", "0"))]


def _store(spec: dict[str, Any]) -> Any:
    # import budget: the store loads when the job starts (not when the module is imported)
    from mlkit.tracking.store import FileStore

    return FileStore(spec["store"])


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m mlkit.backends.slurm.job JOB_JSON [--node]", file=sys.stderr)
        return 2
    # the handlers come first: a USR2 (or scancel's TERM) before the child exists is remembered and
    # acted on, never Python's default action (USR2 would kill the job step unrecorded)
    signals = _Signals()
    spec_path = Path(argv[0])
    node_mode = "--node" in argv[1:]
    spec = json.loads(spec_path.read_text())
    task = _task(spec)
    run_id = task["run_id"]
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    job = os.environ.get("SLURM_JOB_ID", "")
    store = _store(spec)
    if not node_mode and not _finished(
        store, run_id
    ):  # job.sh resubmitted by hand: the supervisor refuses it
        tags = {RAW_JOB_TAG: job, STATE_TAG: "RUNNING", RESTARTS_TAG: str(restarts)}
        if os.environ.get("SLURM_JOB_NODELIST"):
            tags[NODES_TAG] = os.environ["SLURM_JOB_NODELIST"]
        tags.update(_missing_job_id(store, run_id))
        store.set_tags(run_id, tags)
    nodes = int(spec.get("nodes", 1))
    python = spec.get("python") or sys.executable
    env = {"MLKIT_RESUME_RUN_ID": run_id} if restarts > 0 else None
    here = Path.cwd()  # the job's own directory (see script.JOB_MODULE): srun starts the node steps in it
    with contextlib.suppress(OSError):
        os.chdir(os.environ.get("SLURM_SUBMIT_DIR") or here)  # the supervisor works where sbatch was called
    cwd: Path | None = None
    if nodes > 1 and not node_mode:
        child_argv = srun_argv(python, spec_path, nodes=nodes)
        cwd = here
        # srun forwards USR2 to each node's `--node` step, which turns it into its supervisor's
        # SIGINT; a single SIGINT would only make srun print the tasks' status
        signals.checkpoint = signal.SIGUSR2
    else:
        child_argv = supervisor_argv(python, task["argv"])
        if node_mode:
            head = hostnames(os.environ["SLURM_JOB_NODELIST"])[0]
            rank = int(os.environ.get("SLURM_NODEID", "0"))
            child_argv = supervisor_argv(python, node_argv(task["argv"], nnodes=nodes, node_rank=rank, head=head,
                                                           port=int(spec.get("rdzv_port", 29400))))  # fmt: skip
    if signals.preempted or signals.stop:
        returncode = 128 + (signals.stop or signal.SIGUSR2)  # stopped before the supervisor started
        if node_mode:
            return returncode
    else:
        # in the batch step's own process group: a scancel of the step reaches the supervisor too
        returncode = signals.run(proc.spawn(child_argv, env=env, cwd=cwd, new_session=False))
        if node_mode:
            return returncode
    with contextlib.suppress(Exception):  # the supervisor tagged the run as its own (local) launch
        if not signals.unstarted:
            store.set_tag(run_id, BACKEND_TAG, "slurm")
    if signals.preempted and spec.get("requeue", True) and _checkpointed(store, run_id):
        return _requeue(store, run_id, job, restarts)
    if signals.unstarted:
        return returncode  # Slurm's end state (CANCELLED) says how the run ended
    _record_unstarted(store, run_id, returncode)
    if nodes > 1 and returncode != 0:
        _record_failed_node(store, run_id, returncode)
    return returncode if returncode >= 0 else 128 - returncode


def _finished(store: Any, run_id: str) -> bool:
    """Whether the run already FINISHED (its record is final: a finished run is never run again)."""
    # import budget: the store's names load with the store, after the job started
    from mlkit.tracking.entities import FINISHED

    try:
        return bool(store.get_run(run_id).info.status == FINISHED)
    except Exception:
        return False


def _missing_job_id(store: Any, run_id: str) -> dict[str, str]:
    """The job id tags, when the run has none: its submitter was killed while sbatch ran (sbatch
    went on and submitted the job), so only the job itself can say which job runs it."""
    try:
        if JOB_ID_TAG in store.get_run(run_id).data.tags:
            return {}
    except Exception:
        return {}
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job = f"{array_job}_{task}" if array_job and task else os.environ.get("SLURM_JOB_ID", "")
    if not job:
        return {}
    return {JOB_ID_TAG: job, CLUSTER_TAG: os.environ.get("SLURM_CLUSTER_NAME", "")}


class _Signals:
    """USR2 -> the child's checkpoint signal (SIGINT for a supervisor, USR2 for srun); TERM/INT/HUP
    -> forwarded as they are. Signals that arrive before the child exists are remembered."""

    def __init__(self) -> None:
        self.checkpoint = signal.SIGINT  # the trainers checkpoint on SIGINT (KeyboardInterrupt)
        self.preempted = False
        self.stop: int | None = None
        self.unstarted = True
        self._child: subprocess.Popen[bytes] | None = None
        self._pending: list[int] = []
        signal.signal(signal.SIGUSR2, self._on_usr2)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._forward)

    def _on_usr2(self, signum: int, frame: object) -> None:
        self.preempted = True
        self._send(self.checkpoint)

    def _forward(self, signum: int, frame: object) -> None:
        if self.stop is None:
            self.stop = signum
        self._send(signum)

    def _send(self, signum: int) -> None:
        if self._child is None:
            self._pending.append(signum)
        else:
            self._child.send_signal(signum)

    def run(self, child: subprocess.Popen[bytes]) -> int:
        """Wait for `child`; its return code."""
        self._child = child
        self.unstarted = False
        for signum in self._pending:  # arrived while it was being started
            child.send_signal(signum)
        self._pending.clear()
        return child.wait()


def _checkpointed(store: Any, run_id: str) -> bool:
    """Whether the run stopped on the checkpoint signal (KILLED), or never started (SCHEDULED): only
    then is it requeued. A run that ended FINISHED or FAILED on its own keeps that end."""
    # import budget: the store's names load with the store, after the job started
    from mlkit.tracking.entities import KILLED, SCHEDULED

    try:
        return bool(store.get_run(run_id).info.status in (KILLED, SCHEDULED))
    except Exception:
        return False


def _record_failed_node(store: Any, run_id: str, returncode: int) -> None:
    """srun said a node failed after node 0's supervisor recorded FINISHED (its ranks were done):
    the run is FAILED `node_failed`; the node that failed wrote `mlkit.failed_node` itself."""
    # import budget: the store's names load with the store, after the job started
    from mlkit.tracking.entities import FAILED, FINISHED

    with contextlib.suppress(Exception):
        if store.get_run(run_id).info.status == FINISHED:
            code = returncode if returncode >= 0 else 128 - returncode
            store.set_tags(run_id, {"mlkit.failure_reason": "node_failed", "mlkit.exit_code": str(code)})
            store.set_terminated(run_id, FAILED)


def _requeue(store: Any, run_id: str, job: str, restarts: int) -> int:
    """Ask Slurm to requeue the job; once it agreed, put the run back to SCHEDULED (preempted,
    requeued). A refused requeue leaves the run as the supervisor recorded it (KILLED)."""
    # import budget: the store's names load with the store, after the job started
    from mlkit.tracking.entities import SCHEDULED

    try:
        result = slurm(["scontrol", "requeue", job])
    except MlkitError as exc:
        print(f"mlkit: scontrol requeue {job} failed: {exc}", file=sys.stderr)
        return 1
    if result.returncode != 0:
        print(f"mlkit: scontrol requeue {job} failed: {result.stderr.strip()}", file=sys.stderr)
        return 1
    store.set_tags(
        run_id,
        {
            "mlkit.failure_reason": "preempted",
            REQUEUED_TAG: "1",
            RESTARTS_TAG: str(restarts),
            STATE_TAG: "REQUEUED",
        },
    )
    store.update_run_status(run_id, SCHEDULED)
    return 0


def _record_unstarted(store: Any, run_id: str, returncode: int) -> None:
    """The supervisor exited without taking the run (a project missing on the node, a broken
    environment): the run says so now instead of waiting for Slurm's record."""
    # import budget: the store's names load with the store, after the job started
    from mlkit.tracking.entities import FAILED, SCHEDULED

    try:
        run = store.get_run(run_id)
    except Exception:
        return
    if run.info.status == SCHEDULED:
        code = returncode if returncode >= 0 else 128 - returncode
        store.set_tags(run_id, {"mlkit.failure_reason": "slurm_failed", "mlkit.exit_code": str(code)})
        store.set_terminated(run_id, FAILED)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
