"""Lost runs: an owner that died without ending its run gets it marked FAILED/lost."""

from __future__ import annotations

import os
import shutil
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


def _markers(exp_dir: Path) -> set[str]:
    return {p.name for p in (exp_dir / ".mlkit-live").glob("*") if p.name != ".all"}


def test_the_scan_reads_only_the_runs_registered_live(store_root: Path, monkeypatch) -> None:
    """Before every `mlkit run` the scan used to open every run's meta.yaml (100,000 runs: seconds);
    now an owned run is registered while it may be live, and the scan reads only those."""
    from mlkit.tracking import lost as lost_module

    store = FileStore(store_root)
    exp = store.create_experiment("many")
    exp_dir = store_root / exp
    ended = []
    for _ in range(40):
        run_id = store.create_run(exp, tags=_dead_owner_tags()).info.run_id
        store.set_terminated(run_id, "FINISHED")
        ended.append(run_id)
    live = store.create_run(exp, tags=ownership_tags()).info.run_id  # this process owns it
    doomed = store.create_run(exp, tags=_dead_owner_tags()).info.run_id
    unowned = store.create_run(exp).info.run_id  # MLflow-like: nothing to judge, not registered
    assert _markers(exp_dir) == {live, doomed}
    store.mark_lost_runs()  # the first scan of each experiment registers it (see the next test)
    read: list[str] = []
    real = lost_module._status
    monkeypatch.setattr(lost_module, "_status", lambda path: read.append(Path(path).name) or real(path))
    assert store.mark_lost_runs() == []  # doomed was marked by the first scan
    assert read == [live]  # 40 ended runs, the lost one and the unowned one: not opened
    assert store.get_run(doomed).info.status == "FAILED" and store.get_run(unowned).info.status == "RUNNING"
    store.set_terminated(live, "FINISHED")
    assert _markers(exp_dir) == set()


def test_an_experiment_from_before_registration_is_scanned_whole_once(store_root: Path) -> None:
    store = FileStore(store_root)
    exp = store.create_experiment("old")
    exp_dir = store_root / exp
    doomed = store.create_run(exp, tags=_dead_owner_tags()).info.run_id
    alive = store.create_run(exp, tags=ownership_tags()).info.run_id
    finished = store.create_run(exp, tags=_dead_owner_tags()).info.run_id
    store.set_terminated(finished, "FINISHED")
    shutil.rmtree(exp_dir / ".mlkit-live")  # as an mlkit that did not register runs left it
    assert doomed in store.mark_lost_runs()
    assert (exp_dir / ".mlkit-live" / ".all").exists()  # registered now: the next scans read markers only
    assert _markers(exp_dir) == {alive}  # the one still running (doomed was ended: unregistered)


def test_a_run_ended_by_another_writer_is_unregistered_by_the_scan(store_root: Path) -> None:
    store = FileStore(store_root)
    run_id = store.create_run("0", tags=ownership_tags()).info.run_id
    store.mark_lost_runs()
    meta = store.run_dir(run_id) / "meta.yaml"  # an MLflow client ends it: it knows nothing of markers
    meta.write_text(meta.read_text().replace("status: 1\n", "status: 3\n"))
    assert _markers(store_root / "0") == {run_id}
    assert store.mark_lost_runs() == []
    assert _markers(store_root / "0") == set()


def test_a_restarted_run_is_registered_again(store_root: Path) -> None:
    store = FileStore(store_root)
    run_id = store.create_run("0", tags=ownership_tags(), status="SCHEDULED").info.run_id
    store.set_terminated(run_id, "KILLED")
    assert _markers(store_root / "0") == set()
    store.restart_run(run_id)  # `mlkit run --run-id` attaching to it
    assert _markers(store_root / "0") == {run_id}


def test_planted_markers_and_a_fifo_meta_yaml_neither_hang_nor_escape(store_root: Path) -> None:
    """Another user of a shared store plants a marker for a run that does not exist and a FIFO as
    a registered run's meta.yaml: the scan (before every `mlkit run`) still ends."""
    store = FileStore(store_root)
    run_id = store.create_run("0", tags=_dead_owner_tags()).info.run_id
    meta = store.run_dir(run_id) / "meta.yaml"
    meta.unlink()
    os.mkfifo(meta)
    store.mark_lost_runs()  # experiment 0 registers its runs
    (store_root / "0" / ".mlkit-live" / ("0" * 32)).touch()  # a run that does not exist
    code = (
        f"from mlkit.tracking.store import FileStore; print(FileStore({str(store_root)!r}).mark_lost_runs())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_gc_scans_every_run_registered_or_not(store_root: Path) -> None:
    """A run an older mlkit created after the experiment was registered has no marker: the scan
    before `mlkit run` does not see it, `mlkit gc` does."""
    from mlkit.tracking.gc import run_gc
    from mlkit.tracking.retention import RetentionPolicy

    store = FileStore(store_root)
    store.mark_lost_runs()  # registers experiment 0
    old = store.create_run("0", tags=_dead_owner_tags()).info.run_id
    (store_root / "0" / ".mlkit-live" / old).unlink()
    assert store.mark_lost_runs() == []
    assert run_gc(store, RetentionPolicy(), dry_run=True).marked_lost == [old]


def test_a_run_taken_over_while_the_scan_looked_is_not_marked_lost(store_root: Path, monkeypatch) -> None:
    """The scan found the run's owner dead; before it marked the run, a supervisor took the run
    over (`mlkit run --run-id`: new ownership tags, under the run's attach lock). It stays RUNNING."""
    from mlkit import fsio
    from mlkit.tracking import store as store_module
    from mlkit.tracking.lost import ATTACH_LOCK

    store = FileStore(store_root)
    run_id = store.create_run("0", tags=_dead_owner_tags()).info.run_id
    run_dir = store.run_dir(run_id)
    found = store_module.lost_runs([store_root / "0"])
    assert [d.name for d, _ in found] == [run_id]
    store.set_tags(run_id, ownership_tags())  # the new owner: this process, alive
    monkeypatch.setattr(store_module, "lost_runs", lambda *a, **k: found)  # the scan's stale view
    assert store.mark_lost_runs() == []
    assert store.get_run(run_id).info.status == "RUNNING"
    # and while a supervisor holds the attach lock (taking it over right now), it is left alone
    store.set_tags(run_id, _dead_owner_tags())
    with fsio.locked(run_dir / ATTACH_LOCK, wait=1, what="run", hint="", mode=0o644, other_owners=True):
        assert store.mark_lost_runs() == []
    assert store.mark_lost_runs() == [run_id]


def test_a_run_resumed_with_the_fluent_api_is_owned_by_its_new_process(store_root: Path) -> None:
    """`mlkit.start_run(run_id=...)` on an ended run: the run is RUNNING again under this process.
    The lost-run check must judge it by its new owner — not mark it lost for its old, dead one
    (as it did), nor miss it once this owner dies."""
    import mlkit

    store = FileStore(store_root)
    run_id = store.create_run("0", tags=_dead_owner_tags()).info.run_id
    store.set_terminated(run_id, "FAILED")
    with mlkit.start_run(run_id=run_id):
        assert store.mark_lost_runs() == []  # alive: this process
        assert store.get_run(run_id).info.status == "RUNNING"
        assert _markers(store_root / "0") == {run_id}
        store.set_tags(run_id, _dead_owner_tags())  # as if this process had died
        assert store.mark_lost_runs() == [run_id]


def test_a_lost_run_never_ends_before_it_started(store_root: Path) -> None:
    """`mlkit run` writes its first heartbeat just before the run's start time; an owner killed
    before the next beat must not leave an end time before the start (`runs list` showed -0.0s)."""
    store = FileStore(store_root)
    start = int(time.time() * 1000)
    tags = {**_dead_owner_tags(), "mlkit.heartbeat": str(start - 1)}
    run_id = store.create_run("0", start_time=start, tags=tags).info.run_id
    assert store.mark_lost_runs(whole=True) == [run_id]
    info = store.get_run(run_id).info
    assert info.status == "FAILED" and info.end_time == start
