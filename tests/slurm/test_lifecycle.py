"""Submit, track, follow and GPU scoping against the real single-node cluster."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from slurmtools import sh, wait_until

from mlkit.tracking.store import FileStore

from helpers import run_mlkit

pytestmark = pytest.mark.slurm


def _submit(project: Path, *args: str) -> str:
    done = run_mlkit("run", str(project), "--backend", "slurm", "--env-manager", "local", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_submit_is_scheduled_with_the_pending_reason_then_runs_to_finished(slurm, project, store_root):
    blocker = sh("sbatch", "--parsable", "--gpus=4", "-o", "/dev/null", "--wrap", "sleep 60").strip()
    try:
        wait_until(lambda: "RUNNING" in sh("squeue", "-h", "-j", blocker, "-o", "%T"))
        run_id = _submit(project, "--gpus", "1", "-P", "steps=4", "--backend-config", "time=5m")
        store = FileStore(store_root)
        run = store.get_run(run_id)
        assert run.info.status == "SCHEDULED"
        job = run.data.tags["mlkit.slurm.job_id"]
        assert run.data.tags["mlkit.slurm.cluster"] == "mlkittest"
        assert run.data.params["steps"] == "4"
        script = (store.artifact_dir(run_id) / "slurm" / "job.sh").read_text()
        assert "#SBATCH --gpus=1" in script and "#SBATCH --time=00:05:00" in script
        assert "#SBATCH --signal=B:USR2@120" in script and "#SBATCH --requeue" in script
        # Slurm names the reason at its next scheduling pass; `runs list` shows it with the job id
        listed = wait_until(lambda: (out := run_mlkit("runs", "list", "--csv").stdout)
                            and f"{job} PENDING (Resources)" in out and out, 30, 0.5)  # fmt: skip
        assert ",SCHEDULED," in listed
    finally:
        sh("scancel", blocker)
    followed = run_mlkit("runs", "logs", run_id, "--follow", timeout=90)
    assert followed.returncode == 0, followed.stderr
    assert "trained" in followed.stdout
    run = FileStore(store_root).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlkit.slurm.state"] == "COMPLETED"
    assert run.data.metrics["loss"] == pytest.approx(0.25)
    log = (FileStore(store_root).artifact_dir(run_id) / "logs" / "output.log").read_text()
    assert "trained" in log
    shown = run_mlkit("runs", "show", run_id)
    assert f"{job} COMPLETED" in shown.stdout


@pytest.mark.parametrize("code", [0, 3])
def test_follow_exits_with_the_jobs_code(slurm, project, store_root, code):
    done = run_mlkit("run", str(project), "--backend", "slurm", "--env-manager", "local", "--follow",
                     "-P", f"code={code}", timeout=90)  # fmt: skip
    assert done.returncode == code, done.stderr
    assert "trained" in done.stdout
    run = FileStore(store_root).search_runs(["0"])[0][0]
    assert run.info.status == ("FINISHED" if code == 0 else "FAILED")


def test_each_job_sees_only_its_own_gpus(slurm, project, store_root):
    ids = [_submit(project, "--gpus", "2", "-P", "sleep=2", "-e", "main") for _ in range(2)]
    store = FileStore(store_root)
    for run_id in ids:
        assert run_mlkit("runs", "logs", run_id, "--follow", timeout=90).returncode == 0
    seen = []
    for run_id in ids:
        log = (store.artifact_dir(run_id) / "logs" / "output.log").read_text()
        line = next(x for x in log.splitlines() if x.startswith("CVD="))
        gpus = line.removeprefix("CVD=").split(",")
        assert len(gpus) == 2, log
        seen.append(set(gpus))
        tags = store.get_run(run_id).data.tags
        assert tags["mlkit.gpu.arbiter"] == "slurm" and tags["mlkit.gpu.count"] == "2"
    assert not seen[0] & seen[1], seen  # the two jobs ran at the same time on different GPUs
    assert seen[0] | seen[1] <= {"0", "1", "2", "3"}


def test_bad_partition_fails_the_run_and_submits_nothing(slurm, project, store_root):
    done = run_mlkit("run", str(project), "--backend", "slurm", "--env-manager", "local",
                     "--backend-config", "partition=nosuch")  # fmt: skip
    assert done.returncode == 1
    assert "sbatch refused the job" in done.stderr and "partition" in done.stderr.lower()
    (run,) = FileStore(store_root).search_runs(["0"])[0]
    assert run.info.status == "FAILED"
    assert run.data.tags["mlkit.failure_reason"] == "slurm_submit_failed"
    assert not sh("squeue", "-h").strip()


def test_submit_checks_are_those_of_a_local_run(slurm, project, store_root):
    done = run_mlkit("run", str(project), "--backend", "slurm", "-P", "code=notanint")
    assert done.returncode == 2
    unknown = run_mlkit("run", str(project), "--backend", "slurm", "-e", "nosuch")
    assert unknown.returncode == 2
    badkey = run_mlkit("run", str(project), "--backend", "slurm", "--backend-config", "partitoin=gpu")
    assert badkey.returncode == 2 and "known keys:" in badkey.stderr and "partition" in badkey.stderr
    assert not store_root.exists() or not FileStore(store_root).search_runs(["0"])[0]
    assert not sh("squeue", "-h").strip()


@pytest.mark.slow
def test_requeue_resumes_the_same_run(slurm, project, store_root):
    """USR2 (as Slurm sends before a time limit or preemption) -> checkpoint -> requeue -> the same
    run resumes; Slurm holds a requeued job ~2 minutes before it starts again."""
    run_id = _submit(project, "-P", "sleep=300", "-P", "steps=5")
    store = FileStore(store_root)
    job = store.get_run(run_id).data.tags["mlkit.slurm.job_id"]
    log = store.artifact_dir(run_id) / "logs" / "output.log"
    wait_until(lambda: log.exists() and "trained" in log.read_text(), 60)
    sh("scancel", "--batch", "--signal=USR2", job)
    wait_until(lambda: store.get_run(run_id).data.tags.get("mlkit.slurm.requeued") == "1", 60)
    assert store.get_run(run_id).data.tags["mlkit.failure_reason"] == "preempted"
    wait_until(lambda: "resumed at step 5" in log.read_text(), 240, 1.0)
    sh("scancel", "--batch", "--signal=INT", job)  # end it now: the resumed run was proven
    wait_until(lambda: store.get_run(run_id).data.tags.get("mlkit.slurm.restart_count") == "1", 30)
    assert "checkpointed on SIGINT" in log.read_text()


def test_ctrl_c_on_follow_without_a_terminal_leaves_the_job_running(slurm, project, store_root):
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlkit", "run", str(project), "--backend", "slurm", "--env-manager", "local",
         "--follow", "-P", "sleep=60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    store = FileStore(store_root)

    def started():
        runs = store.search_runs(["0"])[0] if store_root.exists() else []
        return runs and runs[0].info.status == "RUNNING" and runs[0]

    run = wait_until(started, 60)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert (
        "cancel" not in err.split("stopped following")[0].lower().replace("cancel ", "", 0) or "?" not in err
    )
    assert "job " in err and "goes on" in err
    job = run.data.tags["mlkit.slurm.job_id"]
    assert "RUNNING" in sh("squeue", "-h", "-j", job, "-o", "%T")
    assert run_mlkit("runs", "cancel", run.info.run_id).returncode == 0


def test_spaces_in_names_and_a_comment_submit_and_run(slurm, project, tmp_path, store_root):
    """A project dir and run name with spaces and `comment=my experiment --nice=5`: the job is
    submitted and runs; the comment is one value (no option smuggled in)."""
    spaced = tmp_path / "my proj"
    shutil.copytree(project, spaced)
    run_id = _submit(spaced, "--run-name", "a b", "--backend-config", "comment=my experiment --nice=5")
    store = FileStore(store_root)
    job = store.get_run(run_id).data.tags["mlkit.slurm.job_id"]
    shown = sh("scontrol", "show", "job", "-o", job)
    assert "Comment=my experiment --nice=5 " in shown and " Nice=0 " in shown
    assert "JobName=mlkit-my_proj-a_b " in shown
    assert run_mlkit("runs", "logs", run_id, "--follow", timeout=90).returncode == 0
    assert store.get_run(run_id).info.status == "FINISHED"


def test_a_newline_in_a_run_name_never_reaches_the_shell(slurm, project, tmp_path, store_root):
    marker = tmp_path / "executed"
    done = run_mlkit("run", str(project), "--backend", "slurm", "--env-manager", "local",
                     "--run-name", f"x\ntouch {marker}")  # fmt: skip
    assert done.returncode in (0, 2), done.stderr
    if done.returncode == 0:
        run_id = done.stdout.strip()
        assert run_mlkit("runs", "logs", run_id, "--follow", timeout=90).returncode == 0
        assert FileStore(store_root).get_run(run_id).info.status == "FINISHED"
    assert not marker.exists()


@pytest.mark.parametrize(("status", "code"), [("FINISHED", 0), ("FAILED", 3)])
def test_follow_returns_when_the_run_ended_and_slurm_forgot_its_job(slurm, store_root, status, code):
    store = FileStore(store_root)
    run_id = store.create_run(
        "0", tags={"mlkit.slurm.job_id": "999998", "mlkit.exit_code": str(code)}
    ).info.run_id
    store.set_terminated(run_id, status)
    done = run_mlkit("runs", "logs", run_id, "--follow", timeout=60)
    assert done.returncode == code, done.stderr


def test_a_percent_sign_in_the_store_path_is_not_a_slurm_pattern(slurm, project, tmp_path):
    """sbatch expands `%j`, `%x`, ... in --output: a store under `100%job` made Slurm open a file in
    a directory that does not exist, and the job failed before anything ran (FAILED, no log)."""
    store_root = tmp_path / "100%job" / "mlruns"
    done = run_mlkit("run", str(project), "--backend", "slurm", "--env-manager", "local", "--follow",
                     "--store", str(store_root), timeout=90)  # fmt: skip
    assert done.returncode == 0, done.stderr
    (run,) = FileStore(store_root).search_runs(["0"])[0]
    assert run.info.status == "FINISHED"
    job = run.data.tags["mlkit.slurm.job_id"]
    assert (FileStore(store_root).artifact_dir(run.info.run_id) / "slurm" / f"slurm-{job}.out").exists()


def _killed_while_sbatch_runs(slurm, project: Path, store_root: Path, *args: str) -> str:
    """`mlkit run --backend slurm` SIGKILLed while sbatch waits for a slow controller (slurmctld
    stopped): sbatch, in its own session, goes on and submits the job once the controller answers,
    but nobody records the job's id. The run's id."""
    ctld = slurm.procs["slurmctld"].pid
    store = FileStore(store_root)
    os.kill(ctld, signal.SIGSTOP)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlkit", "run", str(project), "--backend", "slurm", "--env-manager", "local",
             *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

        def scripted():
            runs = store.search_runs(["0"])[0] if store_root.exists() else []
            return (
                runs and (store.artifact_dir(runs[0].info.run_id) / "slurm" / "job.sh").exists() and runs[0]
            )

        run = wait_until(scripted, 30, 0.05)
        proc.kill()
        proc.wait()
    finally:
        os.kill(ctld, signal.SIGCONT)
    assert "mlkit.slurm.job_id" not in store.get_run(run.info.run_id).data.tags
    return run.info.run_id


def test_a_job_whose_submitter_was_killed_in_sbatch_is_found_and_cancelled(slurm, project, store_root):
    """Before: the run stayed SCHEDULED without a job id for ever, `runs cancel` refused it as `not a
    Slurm run`, and its job (pending) could only be found by hand."""
    run_id = _killed_while_sbatch_runs(slurm, project, store_root, "--backend-config", "begin=now+1hour")
    wait_until(lambda: "mlkit-" in sh("squeue", "-h", "-o", "%j"), 30)
    listed = run_mlkit("runs", "list", "--csv")
    assert listed.returncode == 0 and "PENDING" in listed.stdout, listed.stdout
    job = FileStore(store_root).get_run(run_id).data.tags["mlkit.slurm.job_id"]
    done = run_mlkit("runs", "cancel", run_id)
    assert done.returncode == 0, done.stderr
    run = FileStore(store_root).get_run(run_id)
    assert (run.info.status, run.data.tags["mlkit.failure_reason"]) == ("KILLED", "cancelled")
    assert not sh("squeue", "-h", "-j", job, "-o", "%T").strip()


def test_a_job_whose_submitter_was_killed_in_sbatch_records_its_id_when_it_runs(slurm, project, store_root):
    """Before: the job ran the run to its end, but the run never named its job (no `slurm job` in
    `runs list`, `mlkit.slurm.state` left at RUNNING)."""
    run_id = _killed_while_sbatch_runs(slurm, project, store_root)
    store = FileStore(store_root)
    wait_until(lambda: store.get_run(run_id).info.status == "FINISHED", 60)  # no mlkit command asked Slurm
    job = store.get_run(run_id).data.tags["mlkit.slurm.job_id"]
    assert job.isdigit()
    shown = run_mlkit("runs", "show", run_id)
    assert f"{job} COMPLETED" in shown.stdout


def test_a_job_requeued_by_slurm_is_scheduled_again_as_preempted(slurm, project, store_root):
    """`scontrol requeue` (an admin, a node failure with requeue): the supervisor is stopped by
    SIGTERM and records `signal`; once Slurm holds the job pending again the run is SCHEDULED with
    `preempted` (docs/slurm.md), not the stale `signal` of the stopped attempt."""
    run_id = _submit(project, "-P", "sleep=300")
    store = FileStore(store_root)
    job = store.get_run(run_id).data.tags["mlkit.slurm.job_id"]
    wait_until(lambda: store.get_run(run_id).info.status == "RUNNING", 60)
    sh("scontrol", "requeue", job)
    try:
        wait_until(lambda: "PENDING" in sh("squeue", "-h", "-j", job, "-o", "%T"), 60)
        wait_until(lambda: store.get_run(run_id).info.status in ("KILLED", "FAILED"), 60)
        shown = run_mlkit("runs", "show", run_id)
        assert f"{job} PENDING" in shown.stdout, shown.stdout
        tags = store.get_run(run_id).data.tags
        assert store.get_run(run_id).info.status == "SCHEDULED"
        assert (tags["mlkit.failure_reason"], tags["mlkit.slurm.requeued"]) == ("preempted", "1")
    finally:
        sh("scancel", job)


def test_resubmitting_a_finished_runs_script_leaves_its_record_alone(slurm, project, store_root):
    """job.sh is resubmittable by hand; run again after the run FINISHED, the job wrote RUNNING and its
    own job id over the finished run's record, and `runs list` showed `1 RUNNING` for ever."""
    run_id = _submit(project)
    assert run_mlkit("runs", "logs", run_id, "--follow", timeout=90).returncode == 0
    store = FileStore(store_root)
    before = store.get_run(run_id).data.tags
    assert before["mlkit.slurm.state"] == "COMPLETED"
    again = sh("sbatch", "--parsable", str(store.artifact_dir(run_id) / "slurm" / "job.sh")).strip()
    wait_until(
        lambda: sh("squeue", "-h", "-t", "all", "-j", again, "-o", "%T").strip() in ("FAILED", "COMPLETED")
    )
    log = (store.artifact_dir(run_id) / "slurm" / f"slurm-{again}.out").read_text()
    assert "never run again" in log  # the supervisor refused it
    after = store.get_run(run_id)
    assert after.info.status == "FINISHED"
    assert {k: v for k, v in after.data.tags.items() if k.startswith("mlkit.slurm.")} == {
        k: v for k, v in before.items() if k.startswith("mlkit.slurm.")
    }
    assert f"{before['mlkit.slurm.job_id']} COMPLETED" in run_mlkit("runs", "show", run_id).stdout


def test_a_run_of_another_cluster_is_neither_asked_about_nor_cancelled_here(slurm, store_root):
    """Two clusters whose login nodes share one store (a home directory): job ids are per cluster,
    so job 7 here is not the run's job 7. Before: `runs list` wrote this cluster's job 7 state onto
    the run, and `runs cancel` scancel'ed this cluster's job 7 (someone else's work, or your own)."""
    mine = sh("sbatch", "--parsable", "--begin=now+1hour", "-o", "/dev/null", "--wrap", "true").strip()
    try:
        store = FileStore(store_root)
        tags = {"mlkit.slurm.job_id": mine, "mlkit.slurm.cluster": "othercluster", "mlkit.slurm.state": "RUNNING",
                "mlflow.project.backend": "slurm"}  # fmt: skip
        run_id = store.create_run("0", status="RUNNING", tags=tags).info.run_id
        listed = run_mlkit("runs", "list", "--csv")
        assert listed.returncode == 0, listed.stderr
        run = store.get_run(run_id)
        assert run.info.status == "RUNNING" and run.data.tags["mlkit.slurm.state"] == "RUNNING"
        assert "mlkit.slurm.reason" not in run.data.tags
        done = run_mlkit("runs", "cancel", run_id)
        assert done.returncode == 2 and "othercluster" in done.stderr and "mlkittest" in done.stderr, (
            done.stderr
        )
        assert "PENDING" in sh("squeue", "-h", "-j", mine, "-o", "%T")
    finally:
        sh("scancel", mine)


def test_following_a_run_in_a_store_it_cannot_write_ends_when_the_job_ended(
    slurm, project, store_root, tmp_path
):
    """Slurm's end could not be recorded (a read-only mount of the store here; another user's store):
    `runs logs --follow` waited for the record that never came, for ever with accounting."""
    run_id = _submit(project)
    store = FileStore(store_root)
    wait_until(lambda: store.get_run(run_id).info.status == "FINISHED", 60)  # nobody asked Slurm yet
    job = store.get_run(run_id).data.tags["mlkit.slurm.job_id"]
    wait_until(lambda: sh("squeue", "-h", "-t", "all", "-j", job, "-o", "%T").strip() == "COMPLETED", 60)
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    sh("mount", "--bind", str(store_root), str(readonly))
    try:
        sh("mount", "-o", "remount,bind,ro", str(readonly))
        done = run_mlkit("runs", "logs", run_id, "--follow", "--store", str(readonly), timeout=60)
        assert done.returncode == 0, done.stderr
        assert "trained" in done.stdout
        assert "mlkit.slurm.final" not in store.get_run(run_id).data.tags  # nothing could be written
    finally:
        sh("umount", str(readonly))


def test_a_module_planted_in_the_submit_directory_is_never_imported_by_the_job(
    slurm, project, store_root, tmp_path
):
    """The batch job ran `python -m mlkit...` in the directory sbatch was called from, and `python -m`
    puts that directory first on sys.path: whoever can write there (/tmp, a group's shared directory)
    planted `mlkit/` and ran their code as the submitting user, in the job step and its supervisor."""
    run_id = _submit(project, "--backend-config", "begin=now+1hour")  # nothing planted while mlkit runs here
    store = FileStore(store_root)
    sh("scancel", store.get_run(run_id).data.tags["mlkit.slurm.job_id"])
    where = tmp_path / "shared"
    (where / "mlkit").mkdir(parents=True)
    marker = tmp_path / "hijacked"
    (where / "mlkit" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\nraise SystemExit(9)\n")
    # its batch script, submitted by hand from the shared directory (the job's working directory)
    script = store.artifact_dir(run_id) / "slurm" / "job.sh"
    job = subprocess.run(["sbatch", "--parsable", "--begin=now", str(script)], cwd=where, capture_output=True,
                         text=True, check=True).stdout.strip()  # fmt: skip
    ended = ("COMPLETED", "FAILED")
    wait_until(lambda: sh("squeue", "-h", "-t", "all", "-j", job, "-o", "%T").strip() in ended, 90)
    assert not marker.exists()
    assert store.get_run(run_id).info.status == "FINISHED"


def test_a_relative_mlkit_python_is_the_one_in_the_submit_directory(slurm, project, store_root, tmp_path):
    """`mlkit-python=venv/bin/python` names the interpreter under the directory you submit from (the
    job starts mlkit from its own directory, so the path is made absolute at submission)."""
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    # a script, not a link: a link to a venv's interpreter is not that venv (Python resolves the link)
    (venv / "python").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (venv / "python").chmod(0o755)
    done = run_mlkit("run", str(project), "--backend", "slurm", "--env-manager", "local", "--follow",
                     "--backend-config", "mlkit-python=venv/bin/python", cwd=tmp_path, timeout=90)  # fmt: skip
    assert done.returncode == 0, done.stderr
    (run,) = FileStore(store_root).search_runs(["0"])[0]
    script = (FileStore(store_root).artifact_dir(run.info.run_id) / "slurm" / "job.sh").read_text()
    assert f"exec {venv / 'python'} -m" in script
