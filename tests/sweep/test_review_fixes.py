"""Defects a review found in the sweep driver and launcher, each pinned by a test that fails
without its fix: real processes, real files, a real store."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sweep.sweeptools import sweep_id_of, wait_for

from helpers import run_mlkit

pytestmark = pytest.mark.sweep


def _record_signals(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, int]]:
    """Every real signal (not the 0 probe) sent through os.kill / os.killpg, recorded, not sent."""
    sent: list[tuple[str, int, int]] = []
    real_kill, real_killpg = os.kill, os.killpg

    def kill(pid: int, sig: int) -> None:
        if sig == 0:
            return real_kill(pid, sig)
        sent.append(("kill", pid, sig))

    def killpg(pgid: int, sig: int) -> None:
        if sig == 0:
            return real_killpg(pgid, sig)
        sent.append(("killpg", pgid, sig))

    monkeypatch.setattr(os, "kill", kill)
    monkeypatch.setattr(os, "killpg", killpg)
    return sent


# 1. a reaped supervisor's pid may be anyone's: stop() / kill() must not signal it
def test_a_reaped_trial_is_never_signalled_through_its_old_pid(monkeypatch):
    from mlkit.sweep.launch import LocalTrial

    popen = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    popen.wait()  # what LocalLauncher._watch does the moment it exits
    trial = LocalTrial("run", popen)
    sent = _record_signals(monkeypatch)
    trial.stop()
    trial.kill()
    assert sent == []


def test_stop_and_kill_still_reach_a_live_trial_and_its_group():
    from mlkit import proc
    from mlkit.sweep.launch import LocalTrial

    live = LocalTrial("run", subprocess.Popen(["sleep", "30"], start_new_session=True))
    live.stop()
    assert live.popen.wait(timeout=10) == -signal.SIGTERM
    # the leader is reaped but a member of its group lives on: kill() still ends the group
    leader = subprocess.Popen(["sh", "-c", "sleep 30 & echo started"], start_new_session=True,
                              stdout=subprocess.PIPE)  # fmt: skip
    assert leader.stdout is not None and leader.stdout.readline() == b"started\n"
    leader.wait(timeout=10)
    leader.stdout.close()
    assert proc.group_alive(leader.pid)
    LocalTrial("run", leader).kill()
    wait_for(lambda: not proc.group_alive(leader.pid), what="the group to die")


# 2. a batch whose k-th trial cannot start: the earlier ones are handed back, nothing leaks
def _launch(tmp_path: Path, run_id: str, log: Path):
    from mlkit.sweep.launch import TrialLaunch

    return TrialLaunch(run_id=run_id, project_dir=str(tmp_path / "noproject"), entry_point="main", params={},
                       store=str(tmp_path / "store"), gpus=0, wait=None, log=str(log))  # fmt: skip


def test_a_trial_that_cannot_start_hands_back_the_started_ones(tmp_path):
    from mlkit.errors import MlkitError
    from mlkit.sweep.launch import LocalLauncher

    (tmp_path / "afile").write_text("")
    launcher = LocalLauncher(2)
    good = _launch(tmp_path, "good", tmp_path / "logs" / "0.log")
    bad = _launch(tmp_path, "bad", tmp_path / "afile" / "1.log")  # its log's folder is a file
    with pytest.raises(MlkitError) as caught:
        launcher.start([good, bad])
    assert "afile" in caught.value.message and caught.value.hint
    started = caught.value.started  # type: ignore[attr-defined]
    assert [h.run_id for h in started] == ["good"]
    wait_for(launcher.ended.is_set, what="the started trial's watcher")  # it is watched, and reaped
    assert started[0].popen.returncode is not None
    started[0].poll()


def test_a_spawn_failure_closes_the_trials_log(tmp_path, monkeypatch):
    from mlkit.errors import MlkitError
    from mlkit.sweep import launch

    def refuse(*_args, **_kwargs):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(launch.proc, "spawn", refuse)
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(MlkitError) as caught:
        launch.LocalLauncher(1).start([_launch(tmp_path, "r", tmp_path / "logs" / "0.log")])
    assert "Too many open files" in caught.value.message
    assert len(os.listdir("/proc/self/fd")) == before


# 3-5. flags and -P values Optuna (or memory) would choke on: exit 2, one line, nothing created
_TPE = ["-P", "x=uniform(0,1)", "--trials", "2", "--metric", "loss"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ([*_TPE, "--seed", "-1"], "--seed -1"),
        ([*_TPE, "--seed", "4294967296"], "--seed"),
        (["-P", "x=0,1", "--seed", "-5"], "--seed -5"),
        ([*_TPE, "--prune", "median", "--prune-startup", "-1"], "--prune-startup -1"),
        ([*_TPE, "--prune", "median", "--prune-warmup", "-1"], "--prune-warmup -1"),
        (["-P", "steps=range(1000000000)"], "more than 100000 values"),
        (["-P", "steps=range(-9223372036854775807,9223372036854775807)"], "more than 100000 values"),
        (["-P", "x=uniform(0,1)", "--trials", "100001", "--metric", "loss"], "--trials 100001"),
        (["-P", "steps=int(0,1" + "0" * 400 + ")", "--trials", "2", "--metric", "loss"], "out of range"),
        (["-P", "x=uniform(-1e308,1e308)", "--trials", "2", "--metric", "loss"], "too far apart"),
    ],
)
def test_out_of_range_flags_and_bounds_exit_2_and_create_nothing(
    project, tmp_path, store_root, params, message
):
    result = run_mlkit("sweep", str(project), *params, "--env-manager", "local", cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr and "Error:" in result.stderr
    assert not store_root.exists()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (["-P", "x=0,1", "--metric", "../x"], "invalid metric key '../x'"),
        (["-P", "x=0,1", "--metric", ""], "--metric is empty"),
        (["-P", "x=0,1", "--env-manager", "bogus"], "--env-manager 'bogus'"),
        (["-P", "x=0,1", "--system-metrics-interval", "-1"], "--system-metrics-interval"),
        (["-P", "x=0,1", "--timeout", "0"], "--timeout 0: must be more than 0 seconds"),
        (["-P", "x=0,1", "--trial-timeout", "0s"], "--trial-timeout 0: must be more than 0 seconds"),
    ],
)
def test_flags_a_trial_would_refuse_are_refused_before_the_sweep_exists(
    project, tmp_path, store_root, params, message
):
    """What `mlkit run` refuses up front, a sweep refuses before its parent run and trial 0 exist
    (they used to: the parent FAILED, one trial run, then the error)."""
    result = run_mlkit("sweep", str(project), *params, "--gpus-per-trial", "0", cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr and "Error:" in result.stderr
    assert not store_root.exists()


def test_an_unknown_experiment_id_leaves_no_store_behind(project, tmp_path, store_root):
    result = run_mlkit(
        "sweep", str(project), "-P", "x=0,1", "--gpus-per-trial", "0", "--experiment-id", "12345",
        cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert result.returncode == 66, result.stderr
    assert "experiment '12345' does not exist" in result.stderr and "Traceback" not in result.stderr
    assert not store_root.exists()


# 6-7. a joined driver: never adopts the first driver's trials, never ends the parent on its own
# Ctrl-C, and stops (as on a signal) once the parent is ended by `sweep cancel`
def _resume_join(tmp_path: Path, sweep_id: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mlkit", "sweep", "resume", sweep_id, "--join", "--parallel", "1", "--json"],
        cwd=tmp_path, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_a_joined_driver_leaves_the_parent_to_its_driver_and_stops_with_it(
    project, start_sweep, store, tmp_path
):
    from mlkit.sweep.records import trial_runs

    def running() -> list:
        return [r for r in trial_runs(store, sweep_id) if r.info.status == "RUNNING"]

    first = start_sweep(str(project), "-P", "x=0,1,2,3,4,5", "-P", "steps=1", "-P", "sleep=60",
                        "--parallel", "1", "--gpus-per-trial", "0")  # fmt: skip
    sweep_id = wait_for(lambda: sweep_id_of(store), what="the sweep's parent run")
    wait_for(lambda: len(running()) == 1, what="the first driver's trial")
    second = _resume_join(tmp_path, sweep_id)
    try:
        wait_for(lambda: len(running()) == 2, what="the joined driver's trial")
        second.send_signal(signal.SIGINT)  # the joined driver's own Ctrl-C
        _, err2 = second.communicate(timeout=60)
    finally:
        if second.poll() is None:
            second.kill()
            second.communicate()
    assert second.returncode == 130, err2
    assert "still running; watching it" not in err2  # the first driver's trial was not adopted
    assert first.poll() is None and store.get_run(sweep_id).info.status == "RUNNING"
    assert len(running()) == 1  # the first driver's trial runs on; the joined one's stopped

    third = _resume_join(tmp_path, sweep_id)
    try:
        wait_for(lambda: len(running()) == 2, what="the third driver's trial")
        cancelled = run_mlkit("sweep", "cancel", sweep_id, "--json", cwd=tmp_path)
        assert cancelled.returncode == 0, cancelled.stderr
        first.communicate(timeout=60)
        _, err3 = third.communicate(timeout=60)  # it stops by itself: the parent was ended
    finally:
        if third.poll() is None:
            third.kill()
            third.communicate()
    assert first.returncode == 143 and third.returncode == 1, err3
    parent = store.get_run(sweep_id)
    assert parent.info.status == "KILLED" and parent.data.tags["mlkit.failure_reason"] == "signal"
    assert not [r for r in trial_runs(store, sweep_id) if r.info.status in ("RUNNING", "SCHEDULED")]
    assert len(trial_runs(store, sweep_id)) == 3  # slot 0, slot 1 twice: none claimed after the cancel


# 8. a tpe trial a dead driver created but never started runs with the values Optuna recorded
def test_a_never_started_tpe_trial_resumes_with_optunas_values(project, store, seen, tmp_path):
    from mlkit import procid
    from mlkit.sweep import driver as drv
    from mlkit.sweep.records import PARENT_TAG, TAG_DRIVER, TAG_KEY, TAG_OPTUNA, TAG_SLOT
    from mlkit.sweep.study import ask

    options = drv.SweepOptions(project_dir=project, params={"x": "uniform(0.5,0.9)", "steps": "1"},
                               method="tpe", trials=1, metric="loss", parallel=1, gpus_per_trial=0,
                               env_manager="local", system_metrics_interval=0)  # fmt: skip
    prepared = drv.prepare(options)
    sweep_id = drv.create_sweep(prepared, store)
    trial, params = ask(drv._study(store, sweep_id, prepared.spec), prepared.space, None)
    tags = {PARENT_TAG: sweep_id, TAG_KEY: "k", TAG_SLOT: "0", TAG_OPTUNA: str(trial.number),
            TAG_DRIVER: "999999999:", "mlkit.host": procid.hostname()}  # a driver long gone  # fmt: skip
    exp = store.get_run(sweep_id).info.experiment_id
    store.create_run(exp, run_name="t-0", tags=tags, status="SCHEDULED")
    store.set_terminated(sweep_id, "KILLED")  # its driver died
    resumed = run_mlkit("sweep", "resume", sweep_id, "--json", cwd=tmp_path, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    [record] = seen()
    assert repr(record["x"]) == params["x"] and 0.5 <= record["x"] <= 0.9  # not the default 0.0


# 11. an infinite final metric ranks nowhere and is no point on the plot, as a NaN is not
def test_an_infinite_metric_is_no_result(project, store, tmp_path):
    from mlkit.sweep.results import sweep_table

    result = run_mlkit("sweep", str(project), "-P", "x=0.3,inf,1", "-P", "steps=1", "--metric", "loss",
                       "--gpus-per-trial", "0", "--parallel", "1", "--env-manager", "local",
                       "--system-metrics-interval", "0", "--json", cwd=tmp_path, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = sweep_table(store, sweep_id_of(store))
    assert [(t.params["x"], t.metric) for t in table.trials] == [("0.3", 1.0), ("1", 1.49), ("inf", None)]


def _parent(project: Path, store, **options):
    from mlkit.sweep import driver as drv

    opts = drv.SweepOptions(project_dir=project, params={"x": "0", "steps": "1"}, parallel=1, gpus_per_trial=0,
                            env_manager="local", system_metrics_interval=0, **options)  # fmt: skip
    return drv.create_sweep(drv.prepare(opts), store)


# 12. a driver alive on another host (fresh heartbeat): resume and cancel refuse, naming the host
def test_a_live_driver_on_another_host_is_not_taken_for_dead(project, store, tmp_path):
    sweep_id = _parent(project, store)
    store.set_tags(
        sweep_id, {"mlkit.host": "node-elsewhere", "mlkit.heartbeat": str(int(time.time() * 1000))}
    )
    for verb in ("resume", "cancel"):
        result = run_mlkit("sweep", verb, sweep_id, cwd=tmp_path, timeout=120)
        assert result.returncode == 2, result.stderr
        assert "on host node-elsewhere" in result.stderr and "Traceback" not in result.stderr
    assert store.get_run(sweep_id).info.status == "RUNNING"
    # its heartbeat stops: it is gone, and cancel ends the sweep itself
    store.set_tags(sweep_id, {"mlkit.heartbeat": str(int(time.time() * 1000) - 3_600_000)})
    assert run_mlkit("sweep", "cancel", sweep_id, cwd=tmp_path, timeout=120).returncode == 0
    assert store.get_run(sweep_id).info.status == "KILLED"


# 9. cancelling another user's sweep: exit 77 with a one-line error, not a PermissionError traceback.
# The canceller is a forked child that drops to uid 65534 after its imports (that user cannot run
# this interpreter); the "driver" is root's process.
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_cancel_of_another_users_driver_exits_77(project):
    import json

    from second_user import make_box

    from mlkit import procid
    from mlkit.errors import MlkitError
    from mlkit.sweep import driver as drv
    from mlkit.tracking import lost  # noqa: F401 - loaded before the child drops to nobody
    from mlkit.tracking.store import FileStore

    with make_box() as shared:
        driver = subprocess.Popen(["sleep", "60"])
        try:
            store = FileStore(shared / "mlruns")
            sweep_id = _parent(project, store)
            start = wait_for(lambda: procid.start_time(driver.pid), what="the process's start time")
            store.set_tags(sweep_id, {"mlkit.pid": str(driver.pid), "mlkit.pid_start": f"{start:.3f}"})
            subprocess.run(["chmod", "-R", "a+rX", str(shared)], check=True)
            read, write = os.pipe()
            child = os.fork()
            if child == 0:  # as user nobody: cancel the root-owned driver's sweep
                code, text = 0, ""
                try:
                    os.setgid(65534)
                    os.setuid(65534)
                    drv.cancel_sweep(FileStore(shared / "mlruns"), sweep_id, wait=1)
                except MlkitError as exc:
                    code, text = int(exc.exit_code), exc.message
                except BaseException as exc:  # noqa: BLE001 - reported to the parent
                    code, text = -1, repr(exc)
                os.write(write, json.dumps([code, text]).encode())
                os._exit(0)
            os.close(write)
            with os.fdopen(read) as pipe:
                code, text = json.loads(pipe.read())
            os.waitpid(child, 0)
            assert code == 77, text
            assert "belongs to another user" in text
            assert driver.poll() is None
        finally:
            driver.kill()
            driver.wait()


# 10. a driver waiting on another driver's trials does not scan the whole store on every look
def test_waiting_on_other_drivers_scans_for_lost_runs_once_a_heartbeat(project, store_root):
    from mlkit.sweep.driver import Driver
    from mlkit.tracking.store import FileStore

    class Counting(FileStore):
        scans = 0

        def mark_lost_runs(self, *args, **kwargs):
            Counting.scans += 1
            return super().mark_lost_runs(*args, **kwargs)

    store = Counting(store_root)
    driver = Driver(store, _parent(project, store), notify=lambda _line: None)
    for _ in range(5):
        assert driver._others_live() is False
    assert Counting.scans == 1
