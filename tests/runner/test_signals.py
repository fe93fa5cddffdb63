"""Signals, timeouts and leftovers: the supervisor stops the whole tree and records KILLED."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

# The entry point starts a grandchild in its own group and one that escapes into a new session,
# writes all their pids to pids.json, says "ready", then waits.
TREE = {
    "tree.py": """
        import json, os, signal, subprocess, sys, time
        ignore = "--ignore-int" in sys.argv
        if ignore:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
        same_group = subprocess.Popen(sleeper)
        escaped = subprocess.Popen(sleeper, start_new_session=True)
        with open(sys.argv[sys.argv.index("--pids") + 1], "w") as f:
            json.dump({"child": os.getpid(), "pgid": os.getpgid(0), "same_group": same_group.pid,
                       "escaped": escaped.pid}, f)
        print("ready", flush=True)
        time.sleep(120)
    """,
    "exit130.py": """
        print("interrupted, saving checkpoint", flush=True)
        raise SystemExit(130)
    """,
}


def _live(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _group_live(pgid: int) -> list[int]:
    live = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                live.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return live


def _start_tree(make_project, start_mlkit, wait_for, tmp_path, *extra, env=None):
    project = make_project(TREE)
    pids_file = tmp_path / "pids.json"
    sup = start_mlkit(str(project), "-e", "tree.py", "-P", f"pids={pids_file}", *extra, env=env)
    wait_for(lambda: pids_file.exists() and pids_file.stat().st_size > 0, what="the entry point to start")
    wait_for(lambda: b"ready" in sup.out_path.read_bytes(), what="the entry point to be ready")
    return sup, json.loads(pids_file.read_text())


def _assert_all_gone(pids: dict) -> None:
    assert _group_live(pids["pgid"]) == []
    for key in ("child", "same_group", "escaped"):
        assert not _live(pids[key]), f"{key} ({pids[key]}) survived"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_to_the_supervisor_kills_the_tree_and_records_killed(
    sig, make_project, start_mlkit, wait_for, tmp_path, only_run
):
    sup, pids = _start_tree(make_project, start_mlkit, wait_for, tmp_path, env={"MLKIT_KILL_GRACE": "2"})
    assert pids["pgid"] == pids["child"] != sup.pid  # the child leads its own process group
    sup.send_signal(sig)
    assert sup.wait(timeout=30) == 128 + sig
    _assert_all_gone(pids)
    run = only_run()
    assert run.info.status == "KILLED"
    assert run.data.tags["mlkit.failure_reason"] == "signal"
    assert run.data.tags["mlkit.signal"] == signal.Signals(sig).name
    assert run.info.end_time is not None


def test_second_ctrl_c_kills_at_once(make_project, start_mlkit, wait_for, tmp_path, only_run):
    sup, pids = _start_tree(
        make_project, start_mlkit, wait_for, tmp_path, "-P", "ignore-int=1", env={"MLKIT_KILL_GRACE": "60"}
    )
    sup.send_signal(signal.SIGINT)  # ignored by the child; the grace period is a minute
    time.sleep(0.5)
    assert sup.poll() is None
    started = time.monotonic()
    sup.send_signal(signal.SIGINT)
    assert sup.wait(timeout=20) == 130
    assert time.monotonic() - started < 10
    _assert_all_gone(pids)
    assert only_run().info.status == "KILLED"


def test_grace_period_ends_in_sigkill(make_project, start_mlkit, wait_for, tmp_path, only_run):
    sup, pids = _start_tree(
        make_project, start_mlkit, wait_for, tmp_path, "-P", "ignore-int=1", env={"MLKIT_KILL_GRACE": "1"}
    )
    sup.send_signal(signal.SIGINT)
    assert sup.wait(timeout=20) == 130
    _assert_all_gone(pids)
    assert only_run().data.tags["mlkit.signal"] == "SIGINT"


def test_timeout_kills_and_exits_124(make_project, mlkit_run, only_run, tmp_path):
    project = make_project(TREE)
    pids_file = tmp_path / "pids.json"
    started = time.monotonic()
    result = mlkit_run(
        str(project),
        "-e",
        "tree.py",
        "-P",
        f"pids={pids_file}",
        "--timeout",
        "2s",
        env={"MLKIT_KILL_GRACE": "1"},
    )
    assert result.returncode == 124, result.stderr
    assert time.monotonic() - started < 20
    _assert_all_gone(json.loads(pids_file.read_text()))
    run = only_run()
    assert run.info.status == "KILLED"
    assert run.data.tags["mlkit.failure_reason"] == "timeout"
    assert "timeout" in result.stderr


def test_entry_point_exiting_130_is_killed(make_project, mlkit_run, only_run):
    project = make_project(TREE)
    result = mlkit_run(str(project), "-e", "exit130.py")
    assert result.returncode == 130
    run = only_run()
    assert run.info.status == "KILLED"
    assert run.data.tags["mlkit.failure_reason"] == "signal"


def test_leftovers_are_stopped_when_the_entry_point_exits(make_project, mlkit_run, only_run, tmp_path):
    project = make_project(
        {
            "daemon.py": """
                import json, subprocess, sys
                stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
                a = subprocess.Popen([sys.executable, "-c", stubborn])
                b = subprocess.Popen([sys.executable, "-c", stubborn], start_new_session=True)
                json.dump([a.pid, b.pid], open(sys.argv[2], "w"))
            """
        }
    )
    pids_file = tmp_path / "left.json"
    result = mlkit_run(
        str(project), "-e", "daemon.py", "-P", f"pids={pids_file}", env={"MLKIT_KILL_GRACE": "0.5"}
    )
    assert result.returncode == 0, result.stderr
    assert only_run().info.status == "FINISHED"
    for pid in json.loads(Path(pids_file).read_text()):
        assert not _live(pid)
