"""What a Slurm batch script executes inside the allocation: `python -m mlkit.backends.slurm.job
JOB_JSON [--node]`.

It picks its task (the array index, or the only one), records the job's raw id, nodes and restart
count on the run, and starts `python -m mlkit run ... --run-id RUN --backend local` (the ordinary
supervisor) as its child. USR2 (sent by Slurm `--signal=B:USR2@grace` before the time limit or a
preemption) is forwarded to the supervisor as SIGINT, the trainers' checkpoint signal; once the
run has stopped, a requeueable job records `preempted` + `requeued`, puts the run back to
SCHEDULED and asks Slurm to requeue it. The next start attaches to the same run with the same
argv (a run's params never change) and sets MLKIT_RESUME_RUN_ID=<run id> for the entry point (with
Slurm's SLURM_RESTART_COUNT), so a trainer can continue from its own checkpoint.

With `nodes > 1` the batch step starts one `--node` copy per node with srun; each runs its
supervisor with the torchrun rendezvous on the first node.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from mlkit import proc
from mlkit.backends.slurm import BACKEND_TAG, NODES_TAG, REQUEUED_TAG, RESTARTS_TAG, STATE_TAG
from mlkit.backends.slurm.commands import hostnames, slurm
from mlkit.backends.slurm.script import node_argv, srun_argv
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
    spec_path = Path(argv[0])
    node_mode = "--node" in argv[1:]
    spec = json.loads(spec_path.read_text())
    task = _task(spec)
    run_id = task["run_id"]
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    job = os.environ.get("SLURM_JOB_ID", "")
    store = _store(spec)
    if not node_mode:
        tags = {RAW_JOB_TAG: job, STATE_TAG: "RUNNING", RESTARTS_TAG: str(restarts)}
        if os.environ.get("SLURM_JOB_NODELIST"):
            tags[NODES_TAG] = os.environ["SLURM_JOB_NODELIST"]
        store.set_tags(run_id, tags)
    nodes = int(spec.get("nodes", 1))
    python = spec.get("python") or sys.executable
    env = {"MLKIT_RESUME_RUN_ID": run_id} if restarts > 0 else None
    if nodes > 1 and not node_mode:
        child_argv = srun_argv(python, spec_path, nodes=nodes)
    else:
        child_argv = [python, "-m", "mlkit", *task["argv"]]
        if node_mode:
            head = hostnames(os.environ["SLURM_JOB_NODELIST"])[0]
            rank = int(os.environ.get("SLURM_NODEID", "0"))
            child_argv = [python, "-m", "mlkit", *node_argv(child_argv[3:], nnodes=nodes, node_rank=rank,
                                                             head=head, port=int(spec.get("rdzv_port", 29400)))]  # fmt: skip
    # in the batch step's own process group: a scancel of the step reaches the supervisor too
    child = proc.spawn(child_argv, env=env, new_session=False)
    preempted = []

    def on_usr2(signum: int, frame: object) -> None:
        preempted.append(signum)
        child.send_signal(signal.SIGINT)  # the trainers checkpoint on SIGINT (KeyboardInterrupt)

    def forward(signum: int, frame: object) -> None:
        child.send_signal(signum)

    signal.signal(signal.SIGUSR2, on_usr2)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    returncode = child.wait()
    if node_mode:
        return returncode
    with contextlib.suppress(Exception):  # the supervisor tagged the run as its own (local) launch
        store.set_tag(run_id, BACKEND_TAG, "slurm")
    if preempted and spec.get("requeue", True):
        return _requeue(store, run_id, job, restarts)
    _record_unstarted(store, run_id, returncode)
    if nodes > 1 and returncode != 0:
        _record_failed_node(store, run_id, returncode)
    return returncode if returncode >= 0 else 128 - returncode


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
    """Put the run back to SCHEDULED (preempted, requeued) and ask Slurm to requeue the job."""
    # import budget: the store's names load with the store, after the job started
    from mlkit.tracking.entities import SCHEDULED

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
    try:
        result = slurm(["scontrol", "requeue", job])
    except MlkitError as exc:
        print(f"mlkit: scontrol requeue {job} failed: {exc}", file=sys.stderr)
        return 1
    if result.returncode != 0:
        print(f"mlkit: scontrol requeue {job} failed: {result.stderr.strip()}", file=sys.stderr)
        return 1
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
