"""The lease ledger under real concurrency: real processes, a real file lock, real SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mlkit import settings
from mlkit.errors import GpuUnavailableError, GpuWaitTimeoutError
from mlkit.gpu import GpuRequest, leased_run_ids, probe, reserve
from mlkit.gpu.ledger import LEDGER_FILE, _store, ledger_path, read_leases
from mlkit.gpu.records import Lease

WORKER = str(Path(__file__).with_name("lease_worker.py"))
GiB = 1024**3


def start_worker(run_id: str, count: str, hold: float, result: Path, wait: float | None = None):
    argv = [sys.executable, WORKER, run_id, count, str(hold), str(result)]
    if wait is not None:
        argv.append(str(wait))
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sixteen_processes_never_share_a_gpu(fake_nvml, tmp_path):
    fake_nvml("four_idle")
    procs = [start_worker(f"run{i:02d}", "1", 0.5, tmp_path / f"r{i}.json", wait=60) for i in range(16)]
    for proc in procs:
        _, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err
    records = [json.loads((tmp_path / f"r{i}.json").read_text()) for i in range(16)]
    assert sorted(r["run"] for r in records) == [f"run{i:02d}" for i in range(16)]  # all 16 ran
    by_gpu: dict[str, list] = {}
    for record in records:
        (uuid,) = record["uuids"]
        by_gpu.setdefault(uuid, []).append((record["start"], record["end"]))
    assert len(by_gpu) <= 4
    for spans in by_gpu.values():  # never two holders of one GPU at once
        spans.sort()
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            assert start >= end
    events = sorted([(r["start"], 1) for r in records] + [(r["end"], -1) for r in records])
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    assert 2 <= peak <= 4
    assert read_leases() == []  # every lease released


def test_sigkilled_holder_is_reclaimed(fake_nvml, tmp_path):
    fake_nvml("four_idle")
    holder = start_worker("victim", "3", -1, tmp_path / "victim.json")
    try:
        line = holder.stdout.readline()
        assert line.startswith("ready"), holder.stderr.read()
        assert leased_run_ids() == {"victim"}
        with pytest.raises(GpuUnavailableError) as info:
            reserve(GpuRequest.parse("2"), run_id="me", owner_pid=os.getpid())
        assert "leased by run victim…" in info.value.message
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    finally:
        if holder.poll() is None:
            holder.kill()
    with reserve(GpuRequest.parse("4"), run_id="me", owner_pid=os.getpid()) as lease:
        assert len(lease.gpus) == 4
        assert leased_run_ids() == {"me"}
    assert leased_run_ids() == set()


def test_reused_pid_is_not_the_owner(fake_nvml):
    fake_nvml("four_idle")
    uuid = probe(leases=[]).gpus[0].uuid
    directory = settings.ensure_shared_dir(settings.host_state_dir())
    import socket

    host = socket.gethostname()
    # our own (live) pid, but a start time from long ago: a pid that was reused
    stale = Lease(uuid, "old-run", os.getpid(), time.time() - 10_000, host, time.time() - 10_000)
    # a pid that cannot exist
    dead = Lease(probe(leases=[]).gpus[1].uuid, "dead-run", 2**22 + 7, None, host, time.time())
    _store(directory / LEDGER_FILE, [stale, dead])
    assert read_leases() == []
    assert json.loads(ledger_path().read_text())["leases"] == []  # written back


def test_other_hosts_leases_are_kept_but_not_honoured(fake_nvml):
    """The state dir is this host's own: a lease naming another host holds no GPU here; it stays
    in the ledger (shown by `mlkit gpus`, cleared by `--release`)."""
    from mlkit.gpu.ledger import read_survey

    fake_nvml("four_idle")
    uuid = probe(leases=[]).gpus[0].uuid
    directory = settings.ensure_shared_dir(settings.host_state_dir())
    _store(
        directory / LEDGER_FILE, [Lease(uuid, "remote", 1234, time.time(), "other-host.invalid", time.time())]
    )
    assert leased_run_ids() == set()
    assert [(r.run_id, state) for r, state, _ in read_survey().ignored] == [("remote", "foreign")]
    with reserve(GpuRequest.parse("0,"), run_id="me", owner_pid=os.getpid()) as lease:
        assert lease.gpus[0].uuid == uuid
    assert [r.run_id for r, _, _ in read_survey().ignored] == ["remote"]


def test_ledger_file_is_shared(fake_nvml):
    fake_nvml("four_idle")
    with reserve(GpuRequest.parse("1"), run_id="me", owner_pid=os.getpid()):
        path = ledger_path()
        assert path.stat().st_mode & 0o777 == 0o666
        assert (path.parent / "gpu-leases.lock").stat().st_mode & 0o777 == 0o666
        (lease,) = json.loads(path.read_text())["leases"]
        assert lease["run_id"] == "me" and lease["pid"] == os.getpid()
        assert lease["pid_start"] and lease["host"] and lease["since"]
    assert path.parent.stat().st_mode & 0o7777 == 0o1777


def test_wait_times_out(fake_nvml):
    fake_nvml("four_idle")
    messages: list[str] = []
    with reserve(GpuRequest.parse("4"), run_id="hog", owner_pid=os.getpid()):
        with pytest.raises(GpuUnavailableError):  # no --wait: at once
            reserve(GpuRequest.parse("1"), run_id="late", owner_pid=os.getpid())
        started = time.monotonic()
        with pytest.raises(GpuWaitTimeoutError) as info:
            reserve(
                GpuRequest.parse("1"), run_id="late", owner_pid=os.getpid(), wait=0.4, on_wait=messages.append
            )
        assert 0.35 <= time.monotonic() - started < 5
    assert "--wait 0.4s: gave up after" in info.value.message and "leased by run hog…" in info.value.message
    assert messages and messages[0].startswith("waiting for 1 GPU: GPU 0 leased by run hog…")
    assert len(messages) == 1  # said once: the situation did not change


def test_wait_is_not_used_when_waiting_cannot_help(fake_nvml):
    fake_nvml("four_idle")
    started = time.monotonic()
    with pytest.raises(GpuUnavailableError, match="has 4 usable GPUs, 6 asked for"):
        reserve(GpuRequest.parse("6"), run_id="big", owner_pid=os.getpid(), wait=30)
    assert time.monotonic() - started < 5


def test_wait_satisfied_when_state_frees_a_gpu(fake_nvml, fake_state):
    fake_nvml("one_busy_foreign")
    fake_state.set(1, memory_used=77 * GiB, processes=[{"pid": 1, "used_memory": 77 * GiB}])
    messages: list[str] = []
    request = GpuRequest.parse("1", min_free_memory=60 * GiB)
    timer = threading.Timer(0.5, lambda: fake_state.set(1, memory_used=0, processes=[]))
    timer.start()
    try:
        lease = reserve(request, run_id="patient", owner_pid=os.getpid(), wait=30, on_wait=messages.append)
    finally:
        timer.cancel()
    with lease:
        assert [g.index for g in lease.gpus] == [1]
        assert leased_run_ids() == {"patient"}
    assert messages[0] == (
        "waiting for 1 GPU with ≥60.0 GiB free: GPU 0 has 49.1 GiB free, GPU 1 has 2.1 GiB free"
    )


def test_wait_in_a_real_process_until_a_holder_finishes(fake_nvml, tmp_path):
    fake_nvml("four_idle")
    holder = start_worker("first", "4", 1.0, tmp_path / "first.json")
    try:
        deadline = time.monotonic() + 30
        while leased_run_ids() != {"first"}:
            assert time.monotonic() < deadline and holder.poll() is None, holder.stderr.read()
            time.sleep(0.02)
        messages: list[str] = []
        with reserve(GpuRequest.parse("2"), run_id="second", owner_pid=os.getpid(), wait=60,
                     on_wait=messages.append) as lease:  # fmt: skip
            first = json.loads((tmp_path / "first.json").read_text())
            assert time.time() >= first["end"]
            assert len(lease.gpus) == 2
        assert messages and "leased by run first…" in messages[0]
    finally:
        holder.wait(timeout=30)


def test_release_is_idempotent_and_only_mine(fake_nvml):
    fake_nvml("four_idle")
    a = reserve(GpuRequest.parse("1"), run_id="a", owner_pid=os.getpid())
    b = reserve(GpuRequest.parse("1"), run_id="b", owner_pid=os.getpid())
    assert a.gpus[0].uuid != b.gpus[0].uuid
    a.release()
    a.release()
    assert leased_run_ids() == {"b"}
    b.release()
    assert leased_run_ids() == set()


def test_lease_tags_and_env(fake_nvml):
    fake_nvml("four_idle")
    with reserve(GpuRequest.parse("2"), run_id="tagged", owner_pid=os.getpid()) as lease:
        uuids = lease.uuids
        assert lease.env == {"CUDA_VISIBLE_DEVICES": ",".join(uuids), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
        assert lease.notice is None
        tags = lease.tags
    assert tags["mlkit.gpu.count"] == "2"
    assert tags["mlkit.gpu.uuids"] == ",".join(uuids)
    assert tags["mlkit.gpu.driver_version"] == "580.95.05"
    assert tags["mlkit.gpu.cuda_version"] == "13.0"
    for i in range(2):
        assert tags[f"mlkit.gpu.{i}.uuid"] == uuids[i]
        assert tags[f"mlkit.gpu.{i}.index"] == str(i)
        assert tags[f"mlkit.gpu.{i}.name"] == "NVIDIA H100 80GB HBM3"
        assert tags[f"mlkit.gpu.{i}.memory_total"] == str(81559 * 1024**2)
        assert tags[f"mlkit.gpu.{i}.compute_capability"] == "9.0"


def test_none_and_auto_cpu_fallback_lease_nothing(fake_nvml):
    fake_nvml("none")
    none = reserve(GpuRequest.parse("none"), run_id="cpu", owner_pid=os.getpid())
    assert none.env["CUDA_VISIBLE_DEVICES"] == "" and none.gpus == [] and none.tags["mlkit.gpu.count"] == "0"
    auto = reserve(GpuRequest.parse("auto"), run_id="cpu", owner_pid=os.getpid(), wait=10)
    assert auto.gpus == [] and auto.env["CUDA_VISIBLE_DEVICES"] == ""
    assert auto.notice == "no NVIDIA GPU (the NVIDIA driver (580.95.05) reports no GPUs): running on CPU"
    assert leased_run_ids() == set()


def test_real_absent_driver_reserve():
    if probe().gpus:
        pytest.skip("this machine has GPUs")
    with pytest.raises(GpuUnavailableError) as info:
        reserve(GpuRequest.parse("1"), run_id="r", owner_pid=os.getpid(), wait=5)
    assert "no NVIDIA driver" in info.value.message
    assert reserve(GpuRequest.parse("auto"), run_id="r", owner_pid=os.getpid()).notice.endswith(
        "running on CPU"
    )


def test_probe_marks_leases_and_their_processes(fake_nvml, fake_state):
    fake_nvml("four_idle")
    with reserve(GpuRequest.parse("1"), run_id="mine", owner_pid=os.getpid()) as lease:
        index = lease.gpus[0].index
        # a child of the lease holder shows up on its GPU: it is the run's, not foreign
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            fake_state.set(index, processes=[{"pid": child.pid, "used_memory": GiB}])
            report = probe()
            gpu = report.gpus[index]
            assert gpu.leased_by == "mine"
            assert gpu.processes[0].mlkit_run_id == "mine"
            assert [lease.run_id for lease in report.leases] == ["mine"]
        finally:
            child.kill()
            child.wait()
