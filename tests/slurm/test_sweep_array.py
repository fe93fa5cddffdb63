"""`mlkit sweep --backend slurm`: the whole grid as one job array on the real single-node cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from mlkit.tracking.store import FileStore

from helpers import run_mlkit

pytestmark = [pytest.mark.slurm, pytest.mark.sweep]


def wait_until(check, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s")
        time.sleep(0.25)


def squeue_empty() -> bool:
    return not subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.strip()


def test_a_6_trial_grid_is_one_array_with_2_at_a_time(slurm, project, store_root):
    done = run_mlkit("sweep", str(project), "-P", "steps=1,2,3,4,5,6", "--backend", "slurm", "--parallel", "2",
                     "--gpus-per-trial", "0", "--env-manager", "local", "--metric", "loss", "--json",
                     "--backend-config", "time=5m", timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert [t["status"] for t in doc["trials"]] == ["FINISHED"] * 6
    store = FileStore(store_root)
    jobs = {store.get_run(t["run_id"]).data.tags["mlkit.slurm.job_id"] for t in doc["trials"]}
    arrays = {job.split("_")[0] for job in jobs}
    assert len(arrays) == 1 and sorted(int(j.split("_")[1]) for j in jobs) == list(range(6))  # one array
    scripts = list((store.artifact_dir(doc["sweep_id"]) / "slurm").glob("*/job.sh"))
    assert len(scripts) == 1 and "#SBATCH --array=0-5%2" in scripts[0].read_text()
    assert "#SBATCH --time=00:05:00" in scripts[0].read_text()
    # the best trial logged the lowest final loss (1/steps): steps=6
    assert doc["trials"][0]["params"] == {"steps": "6"}
    shown = run_mlkit("sweep", "show", doc["sweep_id"], "--json")
    assert shown.returncode == 0, shown.stderr
    assert len(json.loads(shown.stdout)["trials"]) == 6


def test_an_optuna_sweep_submits_a_batch_of_k_trials_at_a_time(slurm, project, store_root):
    done = run_mlkit("sweep", str(project), "-P", "steps=int(1,8)", "--trials", "4", "--seed", "1",
                     "--backend", "slurm", "--parallel", "2", "--gpus-per-trial", "0", "--env-manager", "local",
                     "--metric", "loss", "--json", timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["method"] == "tpe" and [t["status"] for t in doc["trials"]] == ["FINISHED"] * 4
    store = FileStore(store_root)
    arrays = {store.get_run(t["run_id"]).data.tags["mlkit.slurm.job_id"].split("_")[0] for t in doc["trials"]}
    assert len(arrays) >= 2  # the suggestions went out in batches of at most --parallel
    for script in (store.artifact_dir(doc["sweep_id"]) / "slurm").glob("*/job.sh"):
        text = script.read_text()
        assert "--array=0-1%2" in text or "--array" not in text


PRUNE_PROJECT = """name: curves
entry_points:
  main:
    parameters:
      x: {type: float, default: 0}
    command: "python curve.py --x {x}"
"""
CURVE = """
import argparse, time
import mlkit

p = argparse.ArgumentParser()
p.add_argument("--x", type=float)
a = p.parse_args()
for step in range(10):
    mlkit.log_metric("loss", (a.x - 0.3) ** 2 + 1.0 / (step + 1), step=step)
    time.sleep(0.3)
"""


def test_pruning_stops_an_array_task_through_slurm(slurm, tmp_path, store_root):
    project = tmp_path / "curves"
    project.mkdir()
    (project / "MLproject").write_text(PRUNE_PROJECT)
    (project / "curve.py").write_text(CURVE)
    done = run_mlkit("sweep", str(project), "-P", "x=0.3,0.35,3", "--backend", "slurm", "--parallel", "1",
                     "--gpus-per-trial", "0", "--env-manager", "local", "--metric", "loss", "--prune", "median",
                     "--prune-startup", "2", "--json", timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    by_x = {t["params"]["x"]: t for t in doc["trials"]}
    assert by_x["0.3"]["status"] == by_x["0.35"]["status"] == "FINISHED"
    assert by_x["3"]["status"] == "pruned"
    store = FileStore(store_root)
    run = store.get_run(by_x["3"]["run_id"])
    assert run.info.status == "KILLED" and run.data.tags["mlkit.failure_reason"] == "pruned"
    assert len(store.get_metric_history(run.info.run_id, "loss")) < 10  # stopped inside its allocation


def test_ctrl_c_stops_the_array_tasks(slurm, project, store_root, tmp_path):
    driver = subprocess.Popen(
        [sys.executable, "-m", "mlkit", "sweep", str(project), "-P", "code=0,1", "-P", "sleep=60", "--backend", "slurm",
         "--parallel", "2", "--gpus-per-trial", "0", "--env-manager", "local", "--json"],
        cwd=tmp_path, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        store = FileStore(store_root)

        def running() -> list:
            runs, _ = store.search_runs(None, "tags.`mlkit.sweep.slot` LIKE '%'")
            return [
                r
                for r in runs
                if r.info.status == "RUNNING" and store.get_metric_history(r.info.run_id, "loss")
            ]

        wait_until(lambda: len(running()) == 2, timeout=90)
        driver.send_signal(signal.SIGINT)
        out, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.communicate()
    assert driver.returncode == 130, err
    doc = json.loads(out)
    assert [t["status"] for t in doc["trials"]] == ["KILLED", "KILLED"], err
    assert FileStore(store_root).get_run(doc["sweep_id"]).info.status == "KILLED"
    wait_until(squeue_empty, timeout=60)  # no task left in Slurm


def test_a_refused_array_leaves_no_trial_scheduled(slurm, project, store_root):
    """Before: sbatch refused the array (bad partition), the sweep ended FAILED and its trials stayed
    SCHEDULED for ever, with no job to end them."""
    done = run_mlkit("sweep", str(project), "-P", "steps=1,2", "--backend", "slurm", "--parallel", "2",
                     "--gpus-per-trial", "0", "--env-manager", "local", "--backend-config", "partition=nosuch",
                     timeout=120)  # fmt: skip
    assert done.returncode == 1 and "sbatch refused the job" in done.stderr, done.stderr
    runs = FileStore(store_root).search_runs(["0"])[0]
    trials = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(trials) == 2
    for run in trials:
        assert run.info.status == "FAILED", run.info
        assert run.data.tags["mlkit.failure_reason"] == "slurm_submit_failed"


def test_a_one_trial_batch_names_its_job_before_it_starts(slurm, project, store_root, tmp_path):
    """Before: a batch of one trial (a 1-trial grid, a TPE batch of 1) was submitted but its run was
    never tagged with the job: the driver could not stop it, and a job cancelled while pending left
    the trial SCHEDULED and the sweep waiting for ever."""
    driver = subprocess.Popen(
        [sys.executable, "-m", "mlkit", "sweep", str(project), "-P", "steps=1", "--backend", "slurm", "--parallel",
         "1", "--gpus-per-trial", "0", "--env-manager", "local", "--backend-config", "begin=now+1hour"],
        cwd=tmp_path, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        store = FileStore(store_root)

        def trial():
            runs = store.search_runs(["0"])[0] if store_root.exists() else []
            found = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
            return found and "mlkit.slurm.job_id" in found[0].data.tags and found[0]

        run = None
        deadline = time.monotonic() + 60
        while not run and driver.poll() is None and time.monotonic() < deadline:
            run = trial()
            time.sleep(0.25)
        assert run, "the trial was never tagged with its job"
        assert run_mlkit("runs", "cancel", run.info.run_id).returncode == 0
        out, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.communicate()
        subprocess.run(["scancel", "-u", "root"], capture_output=True)
    assert FileStore(store_root).get_run(run.info.run_id).info.status == "KILLED"
