"""Lost runs: an owner that died without ending its run gets it marked FAILED/lost."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from mlkit.tracking.lost import is_owner_gone, ownership_tags
from mlkit.tracking.store import FileStore

CHILD = r"""
import sys, time
import mlkit
with mlkit.start_run(run_name="doomed") as run:
    mlkit.log_metric("loss", 1.0)
    print(run.info.run_id, flush=True)
    time.sleep(600)
"""


def test_sigkilled_owner_is_marked_lost(store_root: Path) -> None:
    env = {**os.environ, "MLKIT_TRACKING_URI": str(store_root)}
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True, env=env)
    run_id = proc.stdout.readline().strip()
    store = FileStore(store_root)
    assert store.mark_lost_runs() == []  # the owner is alive
    assert store.get_run(run_id).info.status == "RUNNING"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert store.mark_lost_runs() == [run_id]
    run = store.get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags["mlkit.failure_reason"] == "lost"
    assert run.info.end_time is not None
    assert store.mark_lost_runs() == []  # only once


def test_reused_pid_and_remote_heartbeats() -> None:
    me = ownership_tags()
    assert not is_owner_gone(me)
    reused = {**me, "mlkit.pid_start": str(float(me["mlkit.pid_start"]) - 3600)}
    assert is_owner_gone(reused)  # same pid, another process start time
    now = time.time()
    remote = {"mlkit.host": socket.gethostname() + "-elsewhere", "mlkit.pid": "1"}
    assert not is_owner_gone(remote)  # no heartbeat: cannot tell, leave it
    fresh = {**remote, "mlkit.heartbeat": str(int((now - 30) * 1000))}
    stale = {**remote, "mlkit.heartbeat": str(int((now - 600) * 1000))}
    assert not is_owner_gone(fresh, now=now) and is_owner_gone(stale, now=now)


def test_runs_without_ownership_tags_are_left_alone(store_root: Path) -> None:
    store = FileStore(store_root)
    run_id = store.create_run("0").info.run_id  # e.g. written by MLflow: no mlkit.* tags
    assert store.mark_lost_runs() == []
    assert store.get_run(run_id).info.status == "RUNNING"


def _dead_owner_tags() -> dict[str, str]:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return {"mlkit.host": socket.gethostname(), "mlkit.pid": str(proc.pid), "mlkit.pid_start": "1.0"}


def test_quick_scan_reads_only_running_runs(store_root: Path) -> None:
    """mark_lost_runs looks at the status line of each meta.yaml; only RUNNING runs go further."""
    store = FileStore(store_root)
    exp = store.create_experiment("other")
    done = store.create_run(exp, tags=_dead_owner_tags()).info.run_id
    store.set_terminated(done, "FINISHED")
    lost = store.create_run(exp, tags=_dead_owner_tags()).info.run_id
    no_status = store.create_run("0", tags=_dead_owner_tags()).info.run_id
    meta = store.run_dir(no_status) / "meta.yaml"
    meta.write_text(
        "".join(line for line in meta.read_text().splitlines(True) if not line.startswith("status:"))
    )
    deleted = store.create_run("0", tags=_dead_owner_tags()).info.run_id
    store.delete_run(deleted)
    assert sorted(store.mark_lost_runs()) == sorted(
        [lost, no_status]
    )  # no status: RUNNING, as MLflow reads it
    assert store.get_run(done).info.status == "FINISHED"
    assert store.get_run(lost).info.status == "FAILED"
    assert store.get_run(no_status).info.status == "FAILED"
    assert store.get_run(deleted).info.status == "RUNNING"  # deleted runs are left alone
    assert store.mark_lost_runs() == []
