"""`mlkit run` end to end: real subprocess runs of tiny projects, checked on disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

LOGGING_PROJECT = {
    "MLproject": """
        name: tiny
        entry_points:
          main:
            parameters:
              lr: {type: float, default: 0.1}
              tag: {type: string, default: hello}
            command: "python train.py --lr {lr} --tag {tag}"
          fail:
            command: "python fail.py"
    """,
    "train.py": """
        import os, sys
        import mlkit
        print("args", sys.argv[1:])
        print("env", os.environ["MLKIT_RUN_ID"], os.environ["MLFLOW_RUN_ID"], os.environ["MLFLOW_TRACKING_URI"])
        mlkit.log_metric("loss", 0.25, step=1)  # attaches to the supervisor's run
        mlkit.end_run()  # does not end it: the supervisor owns the status
        with mlkit.start_run():
            mlkit.log_metric("acc", 0.9)
    """,
    "fail.py": """
        import sys
        print("about to crash", flush=False)
        print("to stderr", file=sys.stderr)
        raise SystemExit(7)
    """,
}


def test_success_records_a_finished_run_with_metrics_params_and_tags(
    make_project, mlkit_run, only_run, store_root
):
    project = make_project(LOGGING_PROJECT)
    result = mlkit_run(str(project), "-P", "lr=0.5", "--run-name", "first")
    assert result.returncode == 0, result.stderr
    run = only_run()
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "first"
    assert run.data.metrics == {"loss": 0.25, "acc": 0.9}  # the child's logging lands in this run
    assert run.data.params == {"lr": "0.5", "tag": "hello"}
    tags = run.data.tags
    assert tags["mlflow.source.type"] == "PROJECT"
    assert tags["mlflow.project.entryPoint"] == "main"
    assert tags["mlflow.project.backend"] == "local"
    assert tags["mlflow.source.name"] == str(project)
    assert tags["mlflow.runName"] == "first"
    assert tags["mlflow.user"]
    assert "mlflow.project.env" not in tags  # as MLflow: absent for the local manager
    assert "mlflow.source.git.commit" not in tags  # not a git repository
    assert json.loads(tags["mlkit.argv"])[:2] == ["mlkit", "run"]
    command = json.loads(tags["mlkit.command"])
    assert command[1:] == ["train.py", "--lr", "0.5", "--tag", "hello"]
    assert Path(command[0]).name.startswith("python")  # `python` swapped for the env's interpreter
    assert "mlkit.fingerprint" not in tags  # only --skip-if-done hashes the project
    assert len(tags["mlkit.mlproject_hash"]) == 64
    assert tags["mlkit.pid"].isdigit() and tags["mlkit.heartbeat"].isdigit()
    assert tags["mlkit.exit_code"] == "0"
    assert "mlkit.failure_reason" not in tags
    log = Path(store_root, "0", run.info.run_id, "artifacts", "logs", "output.log").read_text()
    assert "args ['--lr', '0.5', '--tag', 'hello']" in log
    assert f"env {run.info.run_id} {run.info.run_id} file://{store_root}" in log
    # the start and end lines, on stderr
    assert f"mlkit: run {run.info.run_id} (experiment Default) started: " in result.stderr
    assert f"mlkit: run {run.info.run_id} FINISHED in " in result.stderr
    assert "args ['--lr'" in result.stdout  # the child's stdout is teed to ours


def test_git_tags_when_the_project_is_in_a_repository(make_project, mlkit_run, only_run, tmp_path):
    project = make_project(LOGGING_PROJECT, name="repo/sub")
    repo = tmp_path / "repo"
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run(
        [*git, "remote", "add", "origin", "https://user:secret@example.com/team/repo.git"], check=True
    )
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert mlkit_run(str(project)).returncode == 0
    tags = only_run().data.tags
    assert tags["mlflow.source.git.commit"] == head
    assert tags["mlflow.source.git.repoURL"] == "https://example.com/team/repo.git"  # credentials removed
    assert tags["mlflow.gitRepoURL"] == "https://example.com/team/repo.git"
    assert tags["mlflow.source.name"] == f"file://{repo}#sub"


def test_failure_passes_the_exit_code_through_and_keeps_output(make_project, mlkit_run, only_run, store_root):
    project = make_project(LOGGING_PROJECT)
    result = mlkit_run(str(project), "-e", "fail")
    assert result.returncode == 7
    run = only_run()
    assert run.info.status == "FAILED"
    assert run.data.tags["mlkit.failure_reason"] == "exit_code"
    assert run.data.tags["mlkit.exit_code"] == "7"
    log = Path(store_root, "0", run.info.run_id, "artifacts", "logs", "output.log").read_text()
    assert "about to crash" in log and "to stderr" in log  # printed before the crash, captured
    assert "FAILED in" in result.stderr and "(exit 7)" in result.stderr
    assert "Traceback" not in result.stderr


def test_output_is_binary_safe_and_written_as_it_arrives(make_project, start_mlkit, store_root, wait_for):
    project = make_project(
        {
            "emit.py": """
                import sys, time
                sys.stdout.buffer.write(bytes(range(256)))
                sys.stdout.buffer.flush()
                print("line before sleep", flush=True)
                time.sleep(30)
            """
        }
    )
    sup = start_mlkit(str(project), "-e", "emit.py", env={"MLKIT_KILL_GRACE": "1"})

    def log_has_line() -> bool:
        logs = list(Path(store_root).glob("0/*/artifacts/logs/output.log"))
        return bool(logs) and b"line before sleep" in logs[0].read_bytes()

    wait_for(log_has_line, what="output.log to show the line while the child still runs")
    assert sup.poll() is None  # still running: the log was written live
    sup.send_signal(signal.SIGTERM)
    sup.wait(timeout=30)
    log = next(Path(store_root).glob("0/*/artifacts/logs/output.log")).read_bytes()
    assert bytes(range(256)) in log


def test_dry_run_creates_nothing_and_shows_the_argv(make_project, mlkit_run, store_root, tmp_path):
    project = make_project(LOGGING_PROJECT)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = mlkit_run(str(project), "-P", "lr=0.3", "-P", "extra=a b", "--dry-run", fast=False)
    assert result.returncode == 0, result.stderr
    assert "python train.py --lr 0.3 --tag hello --extra 'a b'" in result.stdout
    assert "lr" in result.stdout and "(float)" in result.stdout
    assert not store_root.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before

    result = mlkit_run(
        str(project), "--dry-run", "--json", "--nproc-per-node", "2", "-P", "x=a=b", fast=False
    )
    doc = json.loads(result.stdout)
    assert doc["parameters"]["x"] == {"type": "string", "value": "a=b"}  # split at the first '='
    assert doc["argv"][-2:] == ["--x", "a=b"]
    del doc["argv"][-2:]
    assert doc["argv"][:3] == ["python", "-m", "torch.distributed.run"]
    assert doc["argv"][-5:] == ["train.py", "--lr", "0.1", "--tag", "hello"]
    assert doc["parameters"]["lr"] == {"type": "float", "value": "0.1"}
    assert doc["cwd"] == str(project) and doc["experiment"] == "Default"
    assert not store_root.exists()


def test_json_prints_exactly_one_document(make_project, mlkit_run, only_run):
    project = make_project(LOGGING_PROJECT)
    result = mlkit_run(str(project), "--json")
    assert result.returncode == 0
    doc = json.loads(result.stdout)  # raises if the child's output leaked into stdout
    run = only_run()
    assert doc == {
        **doc,  # and the closing summary's keys (issue 14; tests/runner/test_first_hour_run.py)
        "run_id": run.info.run_id,
        "experiment_id": "0",
        "status": "FINISHED",
        "exit_code": 0,
        "skipped": False,
        "failure_reason": None,
        "artifact_uri": run.info.artifact_uri,
    }
    assert doc["duration_s"] > 0
    assert "args ['--lr'" in result.stderr  # the child's stdout went to stderr instead

    failed = json.loads(mlkit_run(str(project), "-e", "fail", "--json").stdout)
    assert (failed["status"], failed["exit_code"], failed["failure_reason"]) == ("FAILED", 7, "exit_code")

    # mlkit's own failure before any run exists: still one document, and the usual line on stderr
    bad = mlkit_run(str(project), "-e", "no-such-entry", "--json")
    doc = json.loads(bad.stdout)
    assert bad.returncode == 2 and doc["run_id"] is None and doc["exit_code"] == 2
    assert "no-such-entry" in doc["error"] and "Error:" in bad.stderr


HOSTILE = ["; rm -rf {victim}", "$(touch {victim})", "`touch {victim}`", "x' && touch {victim} '"]


def test_hostile_parameter_values_run_nothing(make_project, mlkit_run, tmp_path):
    victim = tmp_path / "pwned"
    project = make_project(
        {
            "MLproject": """
                entry_points:
                  main:
                    parameters: {a: string, b: string, c: string, d: string}
                    command: "python echo.py {a} {b} {c} {d}"
                  piped:
                    parameters: {a: string, b: string, c: string, d: string}
                    command: "python echo.py {a} {b} {c} {d} | cat"
            """,
            "echo.py": "import sys; print(sys.argv[1:])",
        }
    )
    values = [v.format(victim=victim) for v in HOSTILE]
    params = [arg for key, v in zip("abcd", values, strict=True) for arg in ("-P", f"{key}={v}")]
    for entry in ("main", "piped"):
        result = mlkit_run(str(project), "-e", entry, *params)
        assert result.returncode == 0, result.stderr
        assert repr(values) in result.stdout  # each arrived as one literal argument
        assert not victim.exists()


def test_experiment_by_name_is_created_and_env_var_is_honoured(make_project, mlkit_run, store):
    project = make_project(LOGGING_PROJECT)
    assert mlkit_run(str(project), "--experiment-name", "exp-a").returncode == 0
    exp = store.get_experiment_by_name("exp-a")
    assert exp is not None
    runs, _ = store.search_runs([exp.experiment_id])
    assert len(runs) == 1
    assert mlkit_run(str(project), env={"MLKIT_EXPERIMENT_NAME": "exp-b"}).returncode == 0
    assert store.get_experiment_by_name("exp-b") is not None


def test_supervisor_sigkilled_leaves_a_run_that_is_later_marked_lost(
    make_project, start_mlkit, store_root, wait_for, only_run
):
    project = make_project({"sleep.py": "import time; print('up', flush=True); time.sleep(60)"})
    sup = start_mlkit(str(project), "-e", "sleep.py")
    wait_for(lambda: any(Path(store_root).glob("0/*/artifacts/logs/output.log")), what="the run to start")
    log = next(Path(store_root).glob("0/*/artifacts/logs/output.log"))
    wait_for(lambda: b"up" in log.read_bytes(), what="the child to start")
    sup.kill()  # SIGKILL: no chance to record anything
    sup.wait()
    assert only_run().info.status == "RUNNING"
    from mlkit.tracking.store import FileStore

    lost = FileStore(store_root).mark_lost_runs()
    run = only_run()
    assert lost == [run.info.run_id]
    assert run.info.status == "FAILED"
    assert run.data.tags["mlkit.failure_reason"] == "lost"
    # the orphaned child is still in its own group; clean it up
    for proc in _processes_with_run_id(run.info.run_id):
        proc.kill()


def _processes_with_run_id(run_id: str) -> list:
    import psutil

    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("MLKIT_RUN_ID") == run_id and proc.pid != os.getpid():
                found.append(proc)
        except psutil.Error:
            continue
    return found


def test_cuda_oom_in_the_output_is_the_failure_reason(make_project, mlkit_run, only_run):
    project = make_project(
        {
            "oom.py": """
                import sys
                print("step 1 ok")
                print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", file=sys.stderr)
                sys.exit(1)
            """
        }
    )
    assert mlkit_run(str(project), "-e", "oom.py").returncode == 1
    run = only_run()
    assert run.info.status == "FAILED"
    assert run.data.tags["mlkit.failure_reason"] == "cuda_oom"


@pytest.mark.mlflow
def test_mlflow_reads_the_run(make_project, mlkit_run, only_run, store_root, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    project = make_project(LOGGING_PROJECT)
    assert mlkit_run(str(project), "-P", "lr=0.5").returncode == 0
    mine = only_run()
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = mlflow.tracking.MlflowClient(tracking_uri=store_root.as_uri())
    theirs = client.get_run(mine.info.run_id)
    assert theirs.info.status == "FINISHED"
    assert theirs.data.params == {"lr": "0.5", "tag": "hello"}
    assert theirs.data.metrics == {"loss": 0.25, "acc": 0.9}
    assert theirs.data.tags["mlflow.source.type"] == "PROJECT"
    assert theirs.data.tags["mlkit.mlproject_hash"] == mine.data.tags["mlkit.mlproject_hash"]
    assert [a.path for a in client.list_artifacts(mine.info.run_id, "logs")] == ["logs/output.log"]
