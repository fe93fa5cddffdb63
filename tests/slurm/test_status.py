"""Status from Slurm, never guessed: each way a job ends maps to the run's status and
`mlkit.failure_reason`, with accounting (sacct via slurmdbd), without it (the job-completion log
only), and with neither (the controller's memory of ended jobs): the same tests run against the
cluster in all three configurations."""

from __future__ import annotations

from pathlib import Path

import pytest
from slurmtools import sh, wait_until

from mlkit.tracking.store import FileStore

from helpers import run_mlkit

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module", params=["sacct", "jobcomp", "controller"])
def accounting(request, slurm_cluster):
    """sacct: accounting through slurmdbd; jobcomp: only the job-completion log; controller:
    neither (Debian's default slurm.conf), so only the controller knows how a job ended, for
    MinJobAge after it did."""
    if request.param == "sacct" and not slurm_cluster.can_account:
        pytest.skip("slurmdbd/mariadb not installed: no accounting configuration")
    slurm_cluster.switch(request.param == "sacct", jobcomp=request.param != "controller")
    return request.param


def _submit(project: Path, *args: str) -> tuple[str, str]:
    done = run_mlkit("run", str(project), "--backend", "slurm", "--env-manager", "local", *args)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip()
    return run_id, FileStore().get_run(run_id).data.tags["mlkit.slurm.job_id"]


def _gone(job: str) -> bool:
    return not sh("squeue", "-h", "-j", job, check=False).strip()


def _accounted(job: str) -> bool:
    """sacct holds the job's end (not the RUNNING or COMPLETING it had while the job ran)."""
    from mlkit.backends.slurm.status import ACTIVE_STATES, QUEUED_STATES

    states = [line.split()[0] for line in sh("sacct", "-n", "-X", "-j", job, "-o", "State", check=False).splitlines()
              if line.strip()]  # fmt: skip
    return bool(states) and not any(s in ACTIVE_STATES or s in QUEUED_STATES for s in states)


def _settled(run_id: str):
    """`runs show` (which asks Slurm) until Slurm's end state is recorded; the run."""

    def done():
        run_mlkit("runs", "show", run_id)
        run = FileStore().get_run(run_id)
        return run if run.data.tags.get("mlkit.slurm.final") == "1" else None

    return wait_until(done, 60, 0.5)


def test_failing_job_is_failed_with_its_exit_code(slurm, accounting, project):
    run_id, job = _submit(project, "-P", "code=3")
    wait_until(lambda: _gone(job), 60)
    run = _settled(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["mlkit.failure_reason"] == "exit_code"
    assert run.data.tags["mlkit.exit_code"] == "3"
    assert run.data.tags["mlkit.slurm.state"] == "FAILED"
    assert run.data.tags["mlkit.slurm.exit_code"] == "3:0"


def test_cancelled_job_ends_killed_cancelled(slurm, accounting, project):
    run_id, job = _submit(project, "-P", "sleep=120")
    wait_until(lambda: FileStore().get_run(run_id).info.status == "RUNNING", 60)
    done = run_mlkit("runs", "cancel", run_id)
    assert done.returncode == 0, done.stderr
    assert "KILLED (cancelled)" in done.stderr
    run = FileStore().get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["mlkit.failure_reason"] == "cancelled"
    assert _gone(job)


def test_cancelled_while_pending_ends_killed_cancelled(slurm, accounting, project):
    run_id, job = _submit(project, "--backend-config", "begin=now+1hour")
    assert FileStore().get_run(run_id).info.status == "SCHEDULED"
    done = run_mlkit("runs", "cancel", run_id)
    assert done.returncode == 0, done.stderr
    run = _settled(run_id)
    assert (run.info.status, run.data.tags["mlkit.failure_reason"]) == ("KILLED", "cancelled")


def test_job_failing_before_the_supervisor_is_never_finished(slurm, accounting, project):
    run_id, job = _submit(project, "--backend-config", "setup=exit 7")
    wait_until(lambda: _gone(job), 60)
    run = _settled(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["mlkit.failure_reason"] == "slurm_failed"
    assert run.data.tags["mlkit.slurm.exit_code"] == "7:0"


def test_job_whose_supervisor_cannot_start_is_failed(slurm, accounting, project, tmp_path):
    run_id, job = _submit(project, "--backend-config", f"mlkit-python={tmp_path}/no-python")
    wait_until(lambda: _gone(job), 60)
    run = _settled(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["mlkit.failure_reason"] == "slurm_failed"
    slurm_out = next((FileStore().artifact_dir(run_id) / "slurm").glob("slurm-*.out")).read_text()
    assert "no-python" in slurm_out
    shown = run_mlkit("runs", "logs", run_id)  # no output.log: Slurm's own output instead
    assert shown.returncode == 0 and "no-python" in shown.stdout and "no output.log" in shown.stderr


def test_listing_many_runs_asks_slurm_once(slurm, accounting, project):
    from mlkit.backends.slurm.status import reconcile

    ids = [_submit(project, "-P", f"code={c}")[0] for c in (0, 4, 0)]
    store = FileStore()
    jobs = [store.get_run(r).data.tags["mlkit.slurm.job_id"] for r in ids]
    wait_until(lambda: all(_gone(j) for j in jobs), 60)
    if accounting == "sacct":  # slurmdbd records the end a moment after the job leaves the queue:
        wait_until(lambda: all(_accounted(j) for j in jobs), 60)  # until then, asking again is right
    result = reconcile(store, [store.get_run(r) for r in ids])
    assert result.calls == ["squeue", "sacct"]
    assert [r.info.status for r in result.runs] == ["FINISHED", "FAILED", "FINISHED"]
    again = reconcile(store, result.runs)
    assert again.calls == []  # ended runs are never asked about again


def test_time_limit_without_requeue_ends_killed_timeout(slurm, accounting, project):
    if accounting != "sacct":
        pytest.skip("a time limit takes a minute: run once, against the accounting configuration")
    run_id, job = _submit(
        project, "-P", "sleep=600", "--backend-config", "time=1,requeue=false,signal-grace=0"
    )
    wait_until(lambda: _gone(job), 150, 1.0)
    run = _settled(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["mlkit.failure_reason"] == "timeout"
    assert run.data.tags["mlkit.slurm.state"] == "TIMEOUT"


def test_job_array_runs_existing_runs_one_per_task(slurm, accounting, project, tmp_path):
    """The sweep's shape: existing SCHEDULED runs submitted as one job array (at most 2 at once);
    each task runs its run with `mlkit run --run-id`, and each run is tracked by its task's id."""
    from mlkit.backends.slurm.config import resolve_config
    from mlkit.backends.slurm.script import Task, local_argv
    from mlkit.backends.slurm.status import reconcile
    from mlkit.backends.slurm.submit import Batch, submit_tasks
    from mlkit.runner.options import RunOptions

    store = FileStore()
    runs = [store.create_run("0", status="SCHEDULED") for _ in range(3)]
    tasks = []
    for code, run in zip((0, 5, 0), runs, strict=True):
        options = RunOptions(project_dir=project, params={"code": str(code)}, env_manager="local")
        tasks.append(Task(run.info.run_id, local_argv(options, run.info.run_id, store.root)))
    job, script = submit_tasks(Batch(tasks, config=resolve_config(""), store_root=store.root, workdir=tmp_path / "sweep",
                                     job_name="sweep", parallelism=2))  # fmt: skip
    assert "#SBATCH --array=0-2%2" in script.read_text()
    ids = [store.get_run(r.info.run_id).data.tags["mlkit.slurm.job_id"] for r in runs]
    assert ids == [f"{job}_0", f"{job}_1", f"{job}_2"]
    wait_until(lambda: _gone(job), 90, 0.5)

    def settled():
        result = reconcile(store, [store.get_run(r.info.run_id) for r in runs])
        return result if all(r.data.tags.get("mlkit.slurm.final") for r in result.runs) else None

    result = wait_until(settled, 60, 0.5)
    assert [r.info.status for r in result.runs] == ["FINISHED", "FAILED", "FINISHED"]
    assert result.runs[1].data.tags["mlkit.exit_code"] == "5"
