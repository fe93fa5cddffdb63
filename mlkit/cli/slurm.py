"""What `mlkit run --backend slurm` shows: the run and job ids at once; with --follow, the run's
output until the job ends (exit: the job's code); Ctrl-C asks whether to cancel on a terminal."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from mlkit.cli import output
from mlkit.settings import tracking_root


def render_submitted(
    outcome: Any,
    *,
    json_out: bool,
    follow: bool,
    store: str | None,
    run_document: Callable[..., dict[str, Any]],
) -> int:
    """Print a Submitted (`run_document`: `mlkit run`'s --json shape); follow it when asked. The exit code."""
    run_id, job = outcome.run_id, outcome.job_id
    for warning in outcome.warnings:
        output.warn(warning)
    where = f" on cluster {outcome.cluster}" if outcome.cluster else ""
    nxt = [f"mlkit runs logs {run_id} --follow", f"mlkit runs cancel {run_id}", f"mlkit runs show {run_id}"]
    if not follow:
        if json_out:
            doc = run_document(
                run_id=run_id, experiment_id=outcome.experiment_id, status="SCHEDULED", next=nxt
            )
            doc["slurm"] = {"job_id": job, "cluster": outcome.cluster, "script": str(outcome.script)}
            output.print_json(doc)
        else:
            output.line(run_id)
            output.info(f"mlkit: run {run_id} submitted as Slurm job {job}{where} (SCHEDULED)")
            output.info(f"  follow  {nxt[0]}\n  cancel  {nxt[1]}")
        return 0
    output.info(
        f"mlkit: run {run_id} submitted as Slurm job {job}{where}; following its output (Ctrl-C to stop)"
    )
    # import budget: the store and the follow loop load only for --follow
    from mlkit.backends.slurm.submit import cancel_runs, wait_for_end
    from mlkit.tracking.store import FileStore

    fs = FileStore(tracking_root(store))
    out = sys.stderr.buffer if json_out else sys.stdout.buffer

    def write(chunk: bytes) -> None:
        out.write(chunk)
        out.flush()

    try:
        code = wait_for_end(fs, run_id, on_output=write, notify=output.warn)
    except KeyboardInterrupt:
        if sys.stdin.isatty() and sys.stderr.isatty():
            answer = input(f"\ncancel Slurm job {job} (run {run_id})? [y/N] ").strip().lower()
            if answer in ("y", "yes"):
                cancel_runs(fs, [run_id], notify=output.info)
                output.info(f"mlkit: cancelled job {job}; the run ends KILLED (cancelled)")
                return 130
        output.info(f"mlkit: stopped following; job {job} goes on (mlkit runs logs {run_id} --follow)")
        return 130
    run = fs.get_run(run_id)
    reason = run.data.tags.get("mlkit.failure_reason")
    tail = f", {reason}" if reason and run.info.status != "FINISHED" else ""
    output.info(f"mlkit: run {run_id} {run.info.status} (Slurm job {job}: exit {code}{tail})")
    if json_out:
        doc = run_document(run_id=run_id, experiment_id=outcome.experiment_id, status=run.info.status,
                           exit_code=code, failure_reason=reason, next=nxt[2:])  # fmt: skip
        doc["slurm"] = {"job_id": job, "cluster": outcome.cluster, "script": str(outcome.script)}
        output.print_json(doc)
    return code
