"""The fluent API (mlkit.start_run & co) and MlkitClient, with MLflow's names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mlkit
from mlkit.errors import InvalidInputError
from mlkit.tracking import fluent
from mlkit.tracking.files import load_yaml_text
from mlkit.tracking.store import FileStore


@pytest.fixture(autouse=True)
def fresh_fluent_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fluent, "_active", [])
    monkeypatch.setattr(fluent, "_stores", {})
    monkeypatch.setattr(fluent, "_experiment_id", None)


def test_context_manager_logs_and_finishes(store_root: Path, tmp_path: Path) -> None:
    exp = mlkit.set_experiment("fluent")
    src = tmp_path / "notes.txt"
    src.write_text("hello")
    with mlkit.start_run(run_name="first", tags={"k": "v"}) as run:
        assert mlkit.active_run() is run
        mlkit.log_param("lr", 0.01)
        mlkit.log_params({"bs": 32})
        mlkit.log_metric("loss", 0.5, step=1)
        mlkit.log_metrics({"acc": 0.9, "f1": 0.8}, step=2)
        mlkit.set_tag("stage", "dev")
        mlkit.log_artifact(src, "docs")
        mlkit.log_text("txt", "out/a.txt")
        mlkit.log_dict({"a": 1}, "cfg.json")
        mlkit.log_dict({"a": 1}, "cfg.yaml")
        uri = mlkit.get_artifact_uri()
    assert mlkit.active_run() is None
    store = FileStore(store_root)
    got = store.get_run(run.info.run_id)
    assert got.info.status == "FINISHED" and got.info.experiment_id == exp.experiment_id
    assert got.data.params == {"lr": "0.01", "bs": "32"}
    assert got.data.metrics == {"loss": 0.5, "acc": 0.9, "f1": 0.8}
    tags = got.data.tags
    assert tags["k"] == "v" and tags["stage"] == "dev" and tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlkit.pid"] == str(os.getpid()) and "mlkit.pid_start" in tags and "mlkit.host" in tags
    art = store.artifact_dir(run.info.run_id)
    assert uri == art.as_uri()
    assert (art / "docs" / "notes.txt").read_text() == "hello"
    assert (art / "out" / "a.txt").read_text() == "txt"
    assert json.loads((art / "cfg.json").read_text()) == {"a": 1}
    assert load_yaml_text((art / "cfg.yaml").read_text()) == {"a": 1}
    assert [r.info.run_id for r in mlkit.search_runs(filter_string="params.bs = '32'")] == [run.info.run_id]


def test_exception_marks_failed_and_keyboard_interrupt_killed(store_root: Path) -> None:
    with pytest.raises(RuntimeError):
        with mlkit.start_run() as failed:
            raise RuntimeError("boom")
    with pytest.raises(KeyboardInterrupt):
        with mlkit.start_run() as killed:
            raise KeyboardInterrupt
    store = FileStore(store_root)
    assert store.get_run(failed.info.run_id).info.status == "FAILED"
    assert store.get_run(killed.info.run_id).info.status == "KILLED"


def test_nested_runs_and_double_start(store_root: Path) -> None:
    with mlkit.start_run() as parent:
        with pytest.raises(InvalidInputError, match="already active"):
            mlkit.start_run()
        with mlkit.start_run(nested=True) as child:
            pass
    tags = FileStore(store_root).get_run(child.info.run_id).data.tags
    assert tags["mlflow.parentRunId"] == parent.info.run_id


def test_attaches_to_the_supervisors_run(store_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FileStore(store_root)
    run_id = store.create_run("0").info.run_id
    for variable in ("MLKIT_RUN_ID", "MLFLOW_RUN_ID"):
        monkeypatch.setenv(variable, run_id)
        with mlkit.start_run() as run:
            assert run.info.run_id == run_id
            mlkit.log_metric(f"m_{variable}", 1.0)
        monkeypatch.delenv(variable)
    got = store.get_run(run_id)
    assert got.info.status == "RUNNING"  # the supervisor owns the status
    assert set(got.data.metrics) == {"m_MLKIT_RUN_ID", "m_MLFLOW_RUN_ID"}


def test_log_without_start_run_starts_one_and_exit_finishes_it(store_root: Path) -> None:
    code = "import mlkit; mlkit.log_metric('x', 1.0); print(mlkit.active_run().info.run_id)"
    env = {**os.environ, "MLKIT_TRACKING_URI": str(store_root)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert FileStore(store_root).get_run(done.stdout.strip()).info.status == "FINISHED"
    crash = "import mlkit; mlkit.log_metric('x', 1.0); print(mlkit.active_run().info.run_id); raise SystemExit(1/0)"
    failed = subprocess.run([sys.executable, "-c", crash], capture_output=True, text=True, env=env)
    assert failed.returncode != 0
    assert FileStore(store_root).get_run(failed.stdout.strip()).info.status == "FAILED"


def test_client_api(store_root: Path, tmp_path: Path) -> None:
    client = mlkit.MlkitClient()
    exp = client.create_experiment("client-exp")
    run = client.create_run(exp, run_name="c")
    run_id = run.info.run_id
    client.log_param(run_id, "p", 1)
    for step in range(3):
        client.log_metric(run_id, "m", step * 1.5, step=step)
    client.set_tag(run_id, "t", "v")
    client.set_terminated(run_id, "FINISHED")
    assert [m.value for m in client.get_metric_history(run_id, "m")] == [0.0, 1.5, 3.0]
    page = client.search_runs([exp], "metrics.m > 2")
    assert [r.info.run_id for r in page] == [run_id] and page.token is None
    assert [e.name for e in client.search_experiments(filter_string="name LIKE 'client%'")] == ["client-exp"]
    assert client.get_experiment_by_name("client-exp").experiment_id == exp
    client.delete_run(run_id)
    assert client.search_runs([exp]) == []
    client.restore_run(run_id)
    assert len(client.search_runs([exp])) == 1
