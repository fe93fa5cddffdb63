"""The wait queue: runs waiting for GPUs are served oldest first, and a big request is not starved."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlkit.errors import GpuUnavailableError, GpuWaitTimeoutError
from mlkit.gpu import GpuRequest, probe, reserve
from mlkit.gpu.ledger import read_state
from mlkit.gpu.queue import holds
from mlkit.gpu.records import Waiter
from mlkit.gpu.select import select

from helpers import run_mlkit

WORKER = str(Path(__file__).with_name("lease_worker.py"))


def waiter(run_id: str, spec: str, since: float, **filters) -> Waiter:
    return Waiter.of(
        GpuRequest.parse(spec, **filters), run_id=run_id, pid=1, pid_start=None, host="h", since=since
    )


def test_a_waiter_that_cannot_be_served_yet_keeps_the_free_gpus_it_could_use(fake_nvml):
    fake_nvml("four_idle")
    report = probe(leases=[])
    uuids = [g.uuid for g in report.gpus]
    leased = {uuids[0]: "a", uuids[1]: "b", uuids[2]: "c"}  # one GPU free
    held = holds(report, [waiter("bigjob99", "2", 1.0)], leased)
    assert held == {uuids[3]: "bigjob99"}
    later = select(report, GpuRequest.parse("1"), {**leased, **held})
    assert not later.ok and not later.fatal
    assert later.why == (
        "GPU 0 leased by run a…, GPU 1 leased by run b…, GPU 2 leased by run c…, "
        "GPU 3 is held for run bigjob99…, which has waited longer"
    )


def test_gpus_no_earlier_waiter_can_use_stay_free_for_later_runs(fake_nvml):
    fake_nvml("one_busy_foreign")  # GPU 0 runs another user's process, GPU 1 is idle
    report = probe(leases=[])
    picky = waiter("picky", "0,", 1.0, exclude_busy=True)  # wants GPU 0 only, and only when idle
    assert holds(report, [picky], {}) == {}
    assert [g.index for g in select(report, GpuRequest.parse("1"), {}).gpus] == [1]


def test_a_waiter_for_named_gpus_holds_the_named_one_that_is_free(fake_nvml):
    fake_nvml("four_idle")
    report = probe(leases=[])
    uuids = [g.uuid for g in report.gpus]
    held = holds(report, [waiter("named", "2,3", 1.0)], {uuids[2]: "other"})
    assert held == {uuids[3]: "named"}
    assert [g.index for g in select(report, GpuRequest.parse("2"), {uuids[2]: "other", **held}).gpus] == [
        0,
        1,
    ]


def test_earlier_waiters_that_can_be_served_take_their_share_first(fake_nvml):
    fake_nvml("four_idle")
    report = probe(leases=[])
    held = holds(report, [waiter("first", "1", 1.0), waiter("second", "2", 2.0)], {})
    assert sorted(held.values()) == ["first", "second", "second"]
    assert not select(report, GpuRequest.parse("2"), held).ok
    assert len(select(report, GpuRequest.parse("1"), held).gpus) == 1


def test_a_waiter_from_another_mlkit_version_holds_nothing(fake_nvml):
    fake_nvml("four_idle")
    odd = Waiter(
        run_id="odd", pid=1, pid_start=None, host="h", since=1.0, request={"kind": "count", "gpuz": 9}
    )
    assert holds(probe(leases=[]), [odd], {}) == {}


def start_worker(run_id: str, count: str, hold: float, result: Path, wait: float | None = None):
    argv = [sys.executable, WORKER, run_id, count, str(hold), str(result)]
    if wait is not None:
        argv.append(str(wait))
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def until(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


def queued() -> list[str]:
    return [w.run_id for w in read_state()[1]]


def leased() -> set[str]:
    return {lease.run_id for lease in read_state()[0]}


def test_a_two_gpu_waiter_is_not_starved_by_a_later_one_gpu_waiter(fake_nvml, tmp_path, monkeypatch):
    """Real processes: with polling alone, the one-GPU run would take each GPU as it frees."""
    fake_nvml("four_idle")
    monkeypatch.setenv("MLKIT_GPU_POLL_INTERVAL", "0.05")
    three = start_worker("three", "3", -1, tmp_path / "three.json")
    one = start_worker("one", "1", -1, tmp_path / "one.json")
    procs = [three, one]
    try:
        for proc in (three, one):
            assert proc.stdout.readline().startswith("ready"), proc.stderr.read()
        big = start_worker("big", "2", 0.3, tmp_path / "big.json", wait=60)
        procs.append(big)
        until(lambda: queued() == ["big"], "big is queued")
        small = start_worker("small", "1", 0.3, tmp_path / "small.json", wait=60)
        procs.append(small)
        until(lambda: queued() == ["big", "small"], "small is queued behind big")

        one.send_signal(signal.SIGKILL)  # one GPU frees: it is held for big, not given to small
        one.wait(timeout=10)
        until(lambda: "one" not in leased(), "the dead holder's lease is reclaimed")
        time.sleep(1.0)  # twenty of small's polls
        assert leased() == {"three"} and queued() == ["big", "small"]
        result = run_mlkit("gpus", "--json")
        waiting = json.loads(result.stdout)["waiting"]
        assert [w["run_id"] for w in waiting] == ["big", "small"]
        table = run_mlkit("gpus").stderr
        assert "waiting #1: run big… (pid" in table and "for 2 GPUs, since" in table
        assert "waiting #2: run small…" in table

        three.send_signal(signal.SIGKILL)
        three.wait(timeout=10)
        for proc in (big, small):
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
        big_run = json.loads((tmp_path / "big.json").read_text())
        assert len(big_run["uuids"]) == 2
        assert queued() == [] and leased() == set()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def test_a_run_that_does_not_wait_respects_the_queue(fake_nvml, tmp_path, monkeypatch):
    fake_nvml("four_idle")
    monkeypatch.setenv("MLKIT_GPU_POLL_INTERVAL", "0.05")
    holder = start_worker("holder", "3", -1, tmp_path / "holder.json")
    try:
        assert holder.stdout.readline().startswith("ready"), holder.stderr.read()
        patient = start_worker("patient", "2", 0.1, tmp_path / "patient.json", wait=60)
        until(lambda: queued() == ["patient"], "patient is queued")
        with pytest.raises(GpuUnavailableError) as info:
            reserve(GpuRequest.parse("1"), run_id="hasty", owner_pid=os.getpid())
        assert "is held for run patient…, which has waited longer" in info.value.message
        auto = reserve(GpuRequest.parse("auto"), run_id="auto", owner_pid=os.getpid())
        assert auto.gpus == [] and "running on CPU" in auto.notice
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        _, err = patient.communicate(timeout=60)
        assert patient.returncode == 0, err
    finally:
        for proc in (holder,):
            if proc.poll() is None:
                proc.kill()


def test_a_waiter_leaves_the_queue_on_timeout_and_when_killed(fake_nvml, tmp_path, monkeypatch):
    fake_nvml("four_idle")
    monkeypatch.setenv("MLKIT_GPU_POLL_INTERVAL", "0.05")
    with reserve(GpuRequest.parse("4"), run_id="all", owner_pid=os.getpid()):
        with pytest.raises(GpuWaitTimeoutError):
            reserve(GpuRequest.parse("1"), run_id="timid", owner_pid=os.getpid(), wait=0.3)
        assert queued() == []
        victim = start_worker("victim", "1", 0.1, tmp_path / "victim.json", wait=60)
        try:
            until(lambda: queued() == ["victim"], "victim is queued")
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=10)
        finally:
            if victim.poll() is None:
                victim.kill()
        assert queued() == []  # a dead waiter is dropped on the next read


def test_waiters_rejoin_in_their_old_places_when_the_queue_was_lost(fake_nvml, tmp_path, monkeypatch):
    """An older mlkit on the host rewrites the ledger without `waiters`: they come back, in order."""
    from mlkit.gpu.ledger import ledger_path, locked

    fake_nvml("four_idle")
    monkeypatch.setenv("MLKIT_GPU_POLL_INTERVAL", "0.05")
    holder = start_worker("holder", "4", -1, tmp_path / "holder.json")
    workers = [holder]
    try:
        assert holder.stdout.readline().startswith("ready"), holder.stderr.read()
        for name in ("first", "second"):
            workers.append(start_worker(name, "1", 0.1, tmp_path / f"{name}.json", wait=60))
            until(lambda name=name: queued()[-1:] == [name], f"{name} is queued")
        with locked():
            state = json.loads(ledger_path().read_text())
            ledger_path().write_text(json.dumps({"version": 1, "leases": state["leases"]}))
        until(lambda: queued() == ["first", "second"], "both are back, in their order")
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
