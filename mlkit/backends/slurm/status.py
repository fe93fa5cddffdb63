"""A Slurm run's status, from Slurm, never guessed.

While the job is queued or running, `squeue` says so (and why it waits: Resources, Priority, QOS);
after it left the queue, `sacct` (with slurmdbd) or the job-completion log (`sacct -c`) says how it
ended, and the run says what it recorded itself. A job that left the queue is never read as
success unless the run itself recorded FINISHED. One `squeue` and one `sacct` call per reconcile,
however many runs; when Slurm cannot be asked, the last known status stays and the caller is told.

`interpret` (pure) maps Slurm's view to the run's status and `mlkit.failure_reason`:
COMPLETED/FAILED -> the run's own record, else FAILED `slurm_failed` (Slurm's exit code in
`mlkit.slurm.exit_code`); CANCELLED -> KILLED `cancelled`; TIMEOUT/DEADLINE -> KILLED `timeout`;
NODE_FAIL/BOOT_FAIL -> FAILED `node_fail`; OUT_OF_MEMORY -> FAILED `out_of_memory`; PREEMPTED ->
KILLED `preempted`; pending again after a requeue -> SCHEDULED (`mlkit.slurm.requeued`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mlkit.backends.slurm import (
    BACKEND_TAG,
    CLUSTER_TAG,
    EXIT_TAG,
    FINAL_TAG,
    JOB_ID_TAG,
    NODES_TAG,
    REASON_TAG,
    REQUEUED_TAG,
    STATE_TAG,
)
from mlkit.errors import MlkitError, SlurmUnavailableError
from mlkit.tracking.entities import FAILED, FINISHED, KILLED, RUNNING, SCHEDULED, TERMINAL_STATUSES

if TYPE_CHECKING:
    from mlkit.tracking.entities import Run
    from mlkit.tracking.store import FileStore

FAILURE_TAG = "mlkit.failure_reason"
QUEUED_STATES = frozenset(
    {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED",
     "STOPPED", "RESIZING", "SIGNALING", "STAGE_OUT", "POWER_UP_NODE", "UPDATE_DB"}
)  # fmt: skip
PENDING_STATES = frozenset(
    {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}
)
ACTIVE_STATES = frozenset({"RUNNING", "COMPLETING"})
# Slurm's end state -> (status, failure reason); None: the run's own record decides
END_STATES: dict[str, tuple[str, str] | None] = {
    "COMPLETED": None,
    "FAILED": None,
    "CANCELLED": (KILLED, "cancelled"),
    "TIMEOUT": (KILLED, "timeout"),
    "DEADLINE": (KILLED, "timeout"),
    "NODE_FAIL": (FAILED, "node_fail"),
    "BOOT_FAIL": (FAILED, "node_fail"),
    "OUT_OF_MEMORY": (FAILED, "out_of_memory"),
    "PREEMPTED": (KILLED, "preempted"),
    "REVOKED": (FAILED, "slurm_failed"),
    "SPECIAL_EXIT": (FAILED, "slurm_failed"),
}


@dataclass
class JobView:
    """What Slurm says about one job (or array task)."""

    job_id: str
    state: str  # Slurm's state, without "by <uid>" ("CANCELLED by 0" -> CANCELLED)
    reason: str = ""  # why it is pending (squeue)
    nodes: str = ""
    exit_code: str = ""  # "3:0" (sacct, or the controller's record of an ended job)
    source: str = "squeue"  # squeue | sacct | jobcomp | controller (an ended job squeue still shows)
    raw_id: str = ""


@dataclass
class Change:
    """What reconciling decided for one run: tags to write and, maybe, a new status."""

    tags: dict[str, str] = field(default_factory=dict)
    status: str | None = None  # a terminal status, or SCHEDULED after a requeue
    final: bool = False


@dataclass
class Reconciled:
    """The runs after reconciling (re-read where they changed), plus what the user should know."""

    runs: list[Run]
    views: dict[str, JobView] = field(default_factory=dict)  # run id -> Slurm's view
    warnings: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)  # the Slurm commands run ("squeue", "sacct")


def parse_squeue(rows: Iterable[Sequence[str]]) -> tuple[dict[str, JobView], dict[str, JobView]]:
    """squeue's rows as (jobs queued or running, jobs that ended but the controller still holds)."""
    live: dict[str, JobView] = {}
    ended: dict[str, JobView] = {}
    for row in rows:
        job_id, raw, state, reason, nodes, exit_code = (row[i].strip() for i in range(6))
        reason = "" if reason in ("None", "(null)") else reason
        nodes = "" if nodes in ("None assigned", "(null)") else nodes
        state = state.split()[0] if state else ""
        if state in QUEUED_STATES or state in ACTIVE_STATES:
            view = JobView(job_id, state, reason, nodes, source="squeue", raw_id=raw)
            into = live
        else:
            view = JobView(job_id, state, "", nodes, exit_code, source="controller", raw_id=raw)
            into = ended
        into[job_id] = view
        into.setdefault(raw, view)  # an array task is also found by its raw id (job comp log)
    return live, ended


def parse_sacct(rows: Iterable[Sequence[str]], source: str) -> dict[str, JobView]:
    views: dict[str, JobView] = {}
    for row in rows:
        job_id, raw, state, exit_code, nodes = (row[i].strip() for i in range(5))
        nodes = "" if nodes in ("None assigned", "(null)") else nodes
        view = JobView(job_id, state.split()[0] if state else "", "", nodes, exit_code, source, raw)
        views[job_id] = view  # a requeued job's later record replaces the earlier one
        views.setdefault(raw, view)
    return views


def _job_ids(run: Run) -> list[str]:
    """The ids Slurm may know this run's job by: its job id, and the raw id the job recorded."""
    tags = run.data.tags
    ids = [tags[JOB_ID_TAG]]
    raw = tags.get("mlkit.slurm.raw_job_id")
    if raw and raw not in ids:
        ids.append(raw)
    return ids


def interpret(run: Run, view: JobView | None) -> Change:
    """The change to `run` that Slurm's `view` of its job calls for (pure)."""
    tags = run.data.tags
    status = run.info.status
    change = Change()
    if view is None:
        return change  # Slurm has no record (yet, or any more): keep what is known, never guess
    if view.source == "squeue" or view.state in QUEUED_STATES or view.state in ACTIVE_STATES:
        if tags.get(STATE_TAG) != view.state:
            change.tags[STATE_TAG] = view.state
        if tags.get(REASON_TAG, "") != view.reason and (view.reason or REASON_TAG in tags):
            change.tags[REASON_TAG] = view.reason
        if view.nodes and tags.get(NODES_TAG) != view.nodes:
            change.tags[NODES_TAG] = view.nodes
        if view.state in PENDING_STATES and status in TERMINAL_STATUSES and status != FINISHED:
            change.status = SCHEDULED  # requeued (by Slurm on preemption, or by the job itself)
            change.tags[REQUEUED_TAG] = "1"
            if tags.get(FAILURE_TAG) != "preempted":  # not the stopped attempt's `signal`
                change.tags[FAILURE_TAG] = "preempted"
        return change
    # the job has left the queue: its end state
    state = view.state
    change.final = True
    change.tags.update({STATE_TAG: state, FINAL_TAG: "1"})
    if view.exit_code:
        change.tags[EXIT_TAG] = view.exit_code
    if view.nodes:
        change.tags[NODES_TAG] = view.nodes
    if REASON_TAG in tags:
        change.tags[REASON_TAG] = ""
    if status == FINISHED:
        return change  # the run itself recorded success; Slurm agrees or came too late to matter
    mapped = END_STATES.get(state, (FAILED, "slurm_failed"))
    if mapped is None:  # COMPLETED / FAILED: the run's own record, when it has one
        if status in TERMINAL_STATUSES:
            return change
        # the job ended without the supervisor recording an end: it never started or died hard
        change.status = FAILED
        change.tags[FAILURE_TAG] = "slurm_failed"
        return change
    change.status, reason = mapped
    change.tags[FAILURE_TAG] = reason
    if reason == "node_fail" and view.nodes:
        change.tags["mlkit.failed_node"] = view.nodes
    return change


def pending_runs(runs: Iterable[Run]) -> list[Run]:
    """The Slurm runs whose end Slurm has not yet been asked about (or told)."""
    return [r for r in runs if JOB_ID_TAG in r.data.tags and FINAL_TAG not in r.data.tags]


def of_another_cluster(run: Run, here: str) -> bool:
    """Whether the run's job was submitted to another cluster than this host's Slurm (`here`, from
    slurm.conf): job ids are per cluster, so this one's job of that id is not the run's. Unknown on
    either side ('' : a configless client): not told apart."""
    there = run.data.tags.get(CLUSTER_TAG, "")
    return bool(here and there and there != here)


def adopt_orphans(store: FileStore, runs: Sequence[Run]) -> list[Run]:
    """`runs`, where a Slurm run still SCHEDULED without a job id (its submitter was killed while
    sbatch ran: sbatch went on and submitted the job, but nobody recorded its id) is tagged with the
    job Slurm holds for it, found by the --output pattern that names the run's own directory (one
    `squeue --me`, only when there is such a run). Not found, or Slurm not reachable: unchanged."""
    orphans = [
        r for r in runs
        if r.info.status == SCHEDULED and JOB_ID_TAG not in r.data.tags and r.data.tags.get(BACKEND_TAG) == "slurm"
    ]  # fmt: skip
    if not orphans:
        return list(runs)
    # import budget: the Slurm commands load only when there are Slurm runs to ask about
    from mlkit.backends.slurm import commands
    from mlkit.backends.slurm.script import output_pattern

    try:
        outputs = commands.own_job_outputs()
    except MlkitError:
        return list(runs)
    found: dict[str, Run] = {}
    for run in orphans:
        pattern = output_pattern(store.artifact_dir(run.info.run_id) / "slurm", "slurm-%j.out")
        jobs = sorted((int(job) for job, out in outputs if out == pattern), reverse=True)
        if not jobs:
            continue
        with contextlib.suppress(MlkitError):
            store.set_tags(run.info.run_id, {JOB_ID_TAG: str(jobs[0]), CLUSTER_TAG: commands.cluster_name()})
            found[run.info.run_id] = store.get_run(run.info.run_id)
    return [found.get(r.info.run_id, r) for r in runs]


def reconcile(store: FileStore, runs: Sequence[Run], *, write: bool = True) -> Reconciled:
    """Bring the Slurm runs among `runs` up to date: one squeue call for all of them, one sacct
    (or job-completion log) call for those that left the queue. Slurm unreachable: the runs stay
    as they are and a warning says so."""
    if write:
        runs = adopt_orphans(store, runs)
    out = Reconciled(runs=list(runs))
    todo = pending_runs(runs)
    if not todo:
        return out
    # import budget: the Slurm commands load only when there are Slurm runs to ask about
    from mlkit.backends.slurm import commands

    here = commands.cluster_name()
    todo = [r for r in todo if not of_another_cluster(r, here)]  # they keep their last known status
    if not todo:
        return out

    ids = sorted({i for r in todo for i in _job_ids(r)})
    try:
        out.calls.append("squeue")
        queued, held = parse_squeue(commands.squeue(ids))
        gone = [r for r in todo if not any(i in queued for i in _job_ids(r))]
        ended: dict[str, JobView] = {}
        if gone:
            out.calls.append("sacct")
            rows, source = commands.sacct(sorted({i for r in gone for i in _job_ids(r)}))
            ended = parse_sacct(rows, source)
    except SlurmUnavailableError as exc:
        out.warnings.append(f"Slurm cannot be asked ({exc.message}): showing the last known status")
        return out
    changed: dict[str, Run] = {}
    for run in todo:
        ids_ = _job_ids(run)
        # queued or running; else Slurm's record of the end (sacct, the completion log); else, on a
        # cluster with neither, the controller's, while it still holds the ended job
        view = (
            next((queued[i] for i in ids_ if i in queued), None)
            or next((ended[i] for i in ids_ if i in ended), None)
            or next((held[i] for i in ids_ if i in held), None)
        )
        if view is not None:
            out.views[run.info.run_id] = view
        change = interpret(run, view)
        if write and (change.tags or change.status):
            if _apply(store, run, change, view):
                changed[run.info.run_id] = run
    if changed:
        out.runs = [_reread(store, r) if r.info.run_id in changed else r for r in out.runs]
    return out


def _apply(store: FileStore, run: Run, change: Change, view: JobView | None = None) -> bool:
    run_id = run.info.run_id
    try:
        if change.status and change.status != run.info.status:
            fresh = store.get_run(run_id)  # the supervisor may have written its end meanwhile
            if fresh.info.status != run.info.status and view is not None:
                change = interpret(fresh, view)  # decided again from what the run says now
            if fresh.info.status == FINISHED:
                change.status = None
                change.tags.pop(FAILURE_TAG, None)
            elif fresh.info.status == RUNNING and change.status == SCHEDULED:
                change.status = None
        if change.tags:
            store.set_tags(run_id, change.tags)
        if change.status == SCHEDULED:
            store.update_run_status(run_id, SCHEDULED)
        elif change.status:
            store.set_terminated(run_id, change.status)
    except MlkitError:
        return False  # a store we may not write (another user's): the view is still shown
    return True


def _reread(store: FileStore, run: Run) -> Run:
    with contextlib.suppress(MlkitError):
        return store.get_run(run.info.run_id)
    return run


def describe(run: Run, view: JobView | None = None) -> str:
    """'123 PENDING (Resources)' / '123 RUNNING on node1' / '123 COMPLETED' for tables."""
    tags = run.data.tags
    job = tags.get(JOB_ID_TAG, "")
    if not job:
        return ""
    state = view.state if view else tags.get(STATE_TAG, "")
    reason = view.reason if view else tags.get(REASON_TAG, "")
    text = f"{job} {state}".strip()
    if reason and state in PENDING_STATES:
        text += f" ({reason})"
    return text


def exit_code_of(run: Run) -> int:
    """The exit code `--follow` ends with: the entry point's (mlkit.exit_code), else one for how
    Slurm ended the job."""
    return exit_code_for(run.info.status, run.data.tags)


def exit_code_for(status: str, tags: dict[str, str]) -> int:
    """exit_code_of for a run's status and tags (as recorded, or as Slurm's view would make them)."""
    if status == FINISHED:
        return 0
    code = tags.get("mlkit.exit_code", "")
    reason = tags.get(FAILURE_TAG, "")
    if reason == "timeout":
        return 124
    if reason in ("cancelled", "preempted"):
        return 130 if not code.isdigit() else int(code) or 130
    if code.isdigit() and int(code):
        return int(code)
    slurm_code = tags.get(EXIT_TAG, "")
    first = slurm_code.split(":")[0]
    if first.isdigit() and int(first):
        return int(first)
    return 1
