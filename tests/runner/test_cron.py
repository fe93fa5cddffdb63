"""Unattended use through `mlkit run`: --skip-if-done, --on-finish / MLKIT_ON_FINISH, heartbeats."""

from __future__ import annotations

import json
from pathlib import Path

PROJECT = {
    "MLproject": """
        entry_points:
          main:
            parameters: {code: {type: int, default: 0}, sleep: {type: float, default: 0}}
            command: "python job.py {code} {sleep}"
    """,
    "job.py": """
        import sys, time
        time.sleep(float(sys.argv[2]))
        sys.exit(int(sys.argv[1]))
    """,
}


def test_skip_if_done_skips_only_the_same_finished_run(make_project, mlkit_run):
    project = make_project(PROJECT)
    first = json.loads(mlkit_run(str(project), "--skip-if-done", "--json").stdout)
    assert first["status"] == "FINISHED"
    again = mlkit_run(str(project), "--skip-if-done", "--json")
    assert again.returncode == 0
    skip = json.loads(again.stdout)  # every key of a run's document (issue 14), these values:
    assert skip == {
        **skip,
        "skipped": True,
        "run_id": first["run_id"],
        "experiment_id": "0",
        "status": "FINISHED",
        "exit_code": 0,
    }
    plain = mlkit_run(str(project), "--skip-if-done")
    assert plain.stdout.strip() == first["run_id"]
    other = json.loads(mlkit_run(str(project), "--skip-if-done", "--json", "-P", "sleep=0.01").stdout)
    assert other["status"] == "FINISHED" and other["run_id"] != first["run_id"]  # other params: runs
    failed = mlkit_run(str(project), "--skip-if-done", "-P", "code=3")
    assert failed.returncode == 3
    assert mlkit_run(str(project), "--skip-if-done", "-P", "code=3").returncode == 3  # FAILED is not done


def test_only_skip_if_done_runs_are_fingerprinted(make_project, mlkit_run, store):
    project = make_project(PROJECT)
    plain = json.loads(mlkit_run(str(project), "--json").stdout)  # the project is not hashed
    assert "mlkit.fingerprint" not in store.get_run(plain["run_id"]).data.tags
    first = json.loads(mlkit_run(str(project), "--skip-if-done", "--json").stdout)
    assert first["run_id"] != plain["run_id"]  # a run without a fingerprint never matches
    assert len(store.get_run(first["run_id"]).data.tags["mlkit.fingerprint"]) == 64
    again = json.loads(mlkit_run(str(project), "--skip-if-done", "--json").stdout)
    assert again == {**again, "skipped": True, "run_id": first["run_id"], "experiment_id": "0"}


def test_on_finish_sees_the_outcome_and_never_changes_the_exit_code(
    make_project, mlkit_run, only_run, tmp_path
):
    project = make_project(PROJECT)
    out = tmp_path / "hook.txt"
    hook = f'echo "$MLKIT_RUN_ID $MLKIT_STATUS $MLKIT_EXIT_CODE" > {out}; echo notified; exit 9'
    result = mlkit_run(str(project), "-P", "code=4", "--on-finish", hook)
    assert result.returncode == 4  # the entry point's, not the hook's
    run = only_run()
    assert out.read_text().split() == [run.info.run_id, "FAILED", "4"]
    assert "--on-finish exited with code 9" in result.stderr
    assert "notified" in result.stderr
    saved = (Path(run.info.artifact_uri.removeprefix("file://")) / "logs" / "on-finish.log").read_text()
    assert "notified" in saved and "exit 9" in saved


def test_on_finish_from_the_environment(make_project, mlkit_run, tmp_path):
    project = make_project(PROJECT)
    out = tmp_path / "hook.txt"
    result = mlkit_run(str(project), env={"MLKIT_ON_FINISH": f'echo "$MLKIT_STATUS" > {out}'})
    assert result.returncode == 0
    assert out.read_text().strip() == "FINISHED"


def test_heartbeat_is_refreshed_while_the_run_lives(make_project, mlkit_run, only_run):
    project = make_project(PROJECT)
    result = mlkit_run(str(project), "-P", "sleep=1", "--json", env={"MLKIT_HEARTBEAT_INTERVAL": "0.1"})
    assert result.returncode == 0
    run = only_run()
    beat = int(run.data.tags["mlkit.heartbeat"])
    assert beat - run.info.start_time >= 500  # refreshed during the 1 s sleep, not only at creation


def test_on_finish_runs_after_a_timeout_too(make_project, mlkit_run, only_run, tmp_path):
    project = make_project(PROJECT)
    out = tmp_path / "hook.txt"
    hook = f'echo "$MLKIT_STATUS $MLKIT_EXIT_CODE" > {out}'
    result = mlkit_run(
        str(project), "-P", "sleep=30", "--timeout", "1s", "--on-finish", hook, env={"MLKIT_KILL_GRACE": "1"}
    )
    assert result.returncode == 124
    assert only_run().data.tags["mlkit.failure_reason"] == "timeout"
    assert out.read_text().split() == ["KILLED", "124"]
