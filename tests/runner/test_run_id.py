"""`mlkit run --run-id RUN`: the supervisor takes an existing run (created SCHEDULED by a Slurm
submission or a sweep) instead of creating one, and runs it the way it runs any other."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from mlkit.tracking.store import FileStore

PROJECT = {
    "MLproject": """
        name: tiny
        entry_points:
          main:
            parameters:
              lr: {type: float, default: 0.1}
            command: "python train.py --lr {lr}"
          slow:
            command: "python -c 'import time; time.sleep(30)'"
    """,
    "train.py": """
        import os, sys
        import mlkit
        print("run", os.environ["MLKIT_RUN_ID"])
        mlkit.log_metric("loss", 0.5, step=1)
        sys.exit(int(os.environ.get("EXIT", "0")))
    """,
}


def _scheduled(store_root: Path, **tags: str) -> str:
    store = FileStore(store_root)
    run = store.create_run(
        "0", run_name="planned", tags={"mlflow.parentRunId": "p" * 32, **tags}, status="SCHEDULED"
    )
    assert store.get_run(run.info.run_id).info.status == "SCHEDULED"
    return run.info.run_id


def test_a_scheduled_run_is_supervised_in_place(make_project, mlkit_run, store_root):
    project = make_project(PROJECT)
    run_id = _scheduled(store_root)
    result = mlkit_run(str(project), "--run-id", run_id, "-P", "lr=0.3")
    assert result.returncode == 0, result.stderr
    assert f"run {run_id}" in result.stdout
    runs, _ = FileStore(store_root).search_runs(["0"])
    assert [r.info.run_id for r in runs] == [run_id]  # no second run was created
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.end_time
    assert run.info.run_name == "planned"  # the submitter's name and tags stay
    assert run.data.tags["mlflow.parentRunId"] == "p" * 32
    assert run.data.params == {"lr": "0.3"}
    assert run.data.metrics["loss"] == 0.5
    assert "mlkit.pid" in run.data.tags and "mlkit.command" in run.data.tags
    log = FileStore(store_root).artifact_dir(run_id) / "logs" / "output.log"
    assert f"run {run_id}" in log.read_text()


def test_a_failed_attempt_is_rerun_without_its_old_reason(make_project, mlkit_run, store_root):
    project = make_project(PROJECT)
    run_id = _scheduled(store_root)
    first = mlkit_run(str(project), "--run-id", run_id, env={"EXIT": "3"})
    assert first.returncode == 3
    run = FileStore(store_root).get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags["mlkit.exit_code"] == "3"
    # what an earlier attempt on more GPUs, on several nodes, left behind
    stale = {
        "mlkit.failed_node": "node-b",
        "mlkit.gpu.1.name": "H100",
        "mlkit.rdzv_id": "x",
        "mlkit.error": "e",
    }
    FileStore(store_root).set_tags(run_id, stale)
    second = mlkit_run(str(project), "--run-id", run_id)
    assert second.returncode == 0, second.stderr
    run = FileStore(store_root).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert "mlkit.failure_reason" not in run.data.tags
    assert run.data.tags.get("mlkit.exit_code", "0") == "0"
    assert not set(stale) & set(run.data.tags)


def test_two_supervisors_attaching_at_once_run_it_once(make_project, start_mlkit, store_root, tmp_path):
    project = make_project({**PROJECT, "MLproject": PROJECT["MLproject"].replace("sleep(30)", "sleep(2)")})
    run_id = _scheduled(store_root)
    many = [start_mlkit(str(project), "-e", "slow", "--run-id", run_id) for _ in range(6)]
    codes = sorted(p.wait(timeout=90) for p in many)
    assert codes == [0] + [2] * 5  # one ran it; each other found it RUNNING under the first: refused
    for i, p in enumerate(many):
        if p.returncode == 2:
            assert "RUNNING under another supervisor" in (tmp_path / f"sup{i}.err").read_text()
    assert FileStore(store_root).get_run(run_id).info.status == "FINISHED"


def test_a_secondary_node_does_not_join_a_run_its_first_node_ended(make_project, mlkit_run, store_root):
    project = make_project(PROJECT)
    run_id = _scheduled(store_root)
    assert mlkit_run(str(project), "--run-id", run_id, env={"EXIT": "3"}).returncode == 3
    late = mlkit_run(str(project), "--run-id", run_id, "--node-rank", "1", "--nnodes", "2",
                     "--rdzv-endpoint", "127.0.0.1:29999")  # fmt: skip
    assert late.returncode == 2 and "its first node has ended it" in late.stderr
    assert "mlkit.failed_node" not in FileStore(store_root).get_run(run_id).data.tags


def test_a_finished_run_is_never_run_again(make_project, mlkit_run, store_root):
    project = make_project(PROJECT)
    run_id = _scheduled(store_root)
    assert mlkit_run(str(project), "--run-id", run_id).returncode == 0
    again = mlkit_run(str(project), "--run-id", run_id)
    assert again.returncode == 2
    assert "already FINISHED" in again.stderr and "Traceback" not in again.stderr
    log = FileStore(store_root).artifact_dir(run_id) / "logs" / "output.log"
    assert log.read_text().count("run ") == 1  # the entry point did not start a second time


def test_a_run_another_live_supervisor_holds_is_refused(make_project, start_mlkit, mlkit_run, store_root):
    project = make_project(PROJECT)
    run_id = _scheduled(store_root)
    holder = start_mlkit(str(project), "-e", "slow", "--run-id", run_id)
    try:
        deadline = time.monotonic() + 20
        while FileStore(store_root).get_run(run_id).info.status != "RUNNING":
            assert time.monotonic() < deadline, "the first supervisor never started the run"
            time.sleep(0.1)
        second = mlkit_run(str(project), "-e", "slow", "--run-id", run_id)
        assert second.returncode == 2, second.stderr
        assert "RUNNING under another supervisor" in second.stderr
    finally:
        holder.send_signal(signal.SIGTERM)
        holder.wait(timeout=30)
    assert FileStore(store_root).get_run(run_id).info.status == "KILLED"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--run-id", "not-hex!"], "not a run id"),
        (["--run-id", "a" * 32], "run"),  # no such run: 66
        (["--run-id", "b" * 32, "--run-name", "x"], "--run-name"),
    ],
)
def test_bad_run_ids_create_nothing(make_project, mlkit_run, store_root, args, message):
    project = make_project(PROJECT)
    result = mlkit_run(str(project), *args)
    assert result.returncode in (2, 66), result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    runs = FileStore(store_root).search_runs(["0"])[0] if store_root.exists() else []
    assert runs == []


def test_dry_run_with_run_id_creates_nothing(make_project, mlkit_run, store_root):
    project = make_project(PROJECT)
    run_id = _scheduled(store_root)
    result = mlkit_run(str(project), "--run-id", run_id, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert FileStore(store_root).get_run(run_id).info.status == "SCHEDULED"


def test_a_secondary_node_that_fails_names_itself_and_leaves_the_status_to_node_0(
    make_project, mlkit_run, store_root
):
    project = make_project({**PROJECT, "fail.sh": "exit 5\n"})
    (project / "MLproject").write_text(
        (project / "MLproject").read_text() + '  broken:\n    command: "sh fail.sh"\n'
    )
    run_id = _scheduled(store_root)
    result = mlkit_run(
        str(project), "-e", "broken", "--run-id", run_id, "--nnodes", "2", "--node-rank", "1",
        "--rdzv-endpoint", "node0:29400",
    )  # fmt: skip
    assert result.returncode == 5, result.stderr
    run = FileStore(store_root).get_run(run_id)
    assert run.info.status == "SCHEDULED"  # node 0 records the run's status, not node 1
    assert run.data.tags["mlkit.failed_node"].endswith("(node rank 1, exit 5)")
    assert "mlkit.pid" not in run.data.tags and not run.data.params
    logs = FileStore(store_root).artifact_dir(run_id) / "logs"
    assert not (logs / "output.log").exists() and (logs / "output-node1.log").exists()


def test_a_changed_param_is_refused_before_the_run_is_touched(make_project, mlkit_run, store_root):
    """`--run-id` of a KILLED run with another `-P` value was exit 2 after the run had been made
    RUNNING again: the store refused the param, and the run was left FAILED (launch_failed)."""
    project = make_project(PROJECT)
    store = FileStore(store_root)
    run_id = _scheduled(store_root)
    store.log_params(run_id, {"lr": "0.3"})
    store.set_terminated(run_id, "KILLED")
    before = store.get_run(run_id)
    result = mlkit_run(str(project), "--run-id", run_id, "-P", "lr=0.5")
    assert result.returncode == 2, result.stderr
    assert "lr=0.3" in result.stderr and "Traceback" not in result.stderr
    after = store.get_run(run_id)
    assert after.info.status == "KILLED" and after.info.end_time == before.info.end_time
    assert after.data.tags == before.data.tags
    # the same value is no change: the run goes on
    assert mlkit_run(str(project), "--run-id", run_id, "-P", "lr=0.3").returncode == 0
