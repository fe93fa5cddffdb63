"""`mlkit gpus` as a real subprocess: no driver (the real path here), stand-in scenarios, leases."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from mlkit.gpu import GpuRequest, probe, reserve

from helpers import run_mlkit


def no_real_gpu() -> bool:
    return not probe().gpus


def test_no_driver_exits_0_with_the_reason():
    if not no_real_gpu():
        pytest.skip("this machine has GPUs")
    result = run_mlkit("gpus")
    assert result.returncode == 0, result.stderr
    assert "No GPUs: no NVIDIA driver: NVML library libnvidia-ml.so.1 not found" in result.stderr
    assert result.stdout == ""


def test_no_driver_json_parses():
    if not no_real_gpu():
        pytest.skip("this machine has GPUs")
    result = run_mlkit("gpus", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["gpus"] == [] and doc["reason"].startswith("no NVIDIA driver")
    assert set(doc) >= {"gpus", "driver_version", "cuda_version", "reason", "leases"}


def test_table_with_the_stand_in():
    result = run_mlkit("gpus", env={"MLKIT_FAKE_NVML": "mig"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split("\t") == ["index", "name", "uuid", "memory", "util", "temp", "power", "sm clock",
                                    "cc", "mig", "processes", "mlkit lease"]  # fmt: skip
    assert len(lines) == 1 + 2 + 3  # header, 2 GPUs, 3 MIG instances
    first = lines[1].split("\t")
    assert first[1] == "NVIDIA A100-SXM4-80GB" and first[9] == "on" and first[7] == "210/1410 MHz"
    assert first[6] == "55 W/400 W" and first[8] == "8.0"
    assert lines[2].split("\t")[0] == "0 mig 1"
    assert "stand-in NVML scenario 'mig'" in result.stderr


def test_json_with_leases_marked(fake_nvml):
    fake_nvml("four_idle")
    with reserve(GpuRequest.parse("1"), run_id="cafe0123456789", owner_pid=os.getpid()) as lease:
        result = run_mlkit("gpus", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert len(doc["gpus"]) == 4 and doc["reason"] is None
    leased = {g["uuid"]: g["leased_by"] for g in doc["gpus"]}
    assert leased[lease.gpus[0].uuid] == "cafe0123456789"
    assert sum(1 for v in leased.values() if v) == 1
    assert doc["leases"][0]["run_id"] == "cafe0123456789" and doc["leases"][0]["pid"] == os.getpid()
    gpu = doc["gpus"][0]
    assert gpu["power_draw"] == 72.0 and gpu["memory_total"] == 81559 * 1024**2


def test_lost_and_unreadable_fields_in_the_table():
    lost = run_mlkit("gpus", env={"MLKIT_FAKE_NVML": "gpu_lost"})
    assert lost.returncode == 0
    assert lost.stdout.splitlines()[2].split("\t")[:4] == ["1", "LOST", "unknown-1", "GPU is lost"]
    raises = run_mlkit("gpus", "--json", env={"MLKIT_FAKE_NVML": "field_raises"})
    gpu = json.loads(raises.stdout)["gpus"][0]
    assert (
        gpu["power_draw"] is None and gpu["temperature"] is None and gpu["name"] == "NVIDIA GeForce RTX 4090"
    )


def test_bad_scenario_is_a_usage_error():
    result = run_mlkit("gpus", env={"MLKIT_FAKE_NVML": "bogus"})
    assert result.returncode == 2
    assert "MLKIT_FAKE_NVML='bogus': no such stand-in NVML scenario" in result.stderr


def test_watch_without_terminal_prints_lines_and_ctrl_c_exits_0(tmp_path):
    env = {**os.environ, "MLKIT_FAKE_NVML": "one_busy_foreign"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlkit", "gpus", "--watch", "--interval", "0.2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = [proc.stdout.readline() for _ in range(4)]  # two refreshes of two GPUs
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert [line.split("\t")[1] for line in lines] == ["0", "1", "0", "1"]
    assert all(line.split("\t")[0].count(":") == 2 for line in lines)  # HH:MM:SS stamps


def test_watch_no_driver_keeps_going():
    if not no_real_gpu():
        pytest.skip("this machine has GPUs")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlkit", "gpus", "--watch", "-n", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first, second = proc.stdout.readline(), proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "no GPUs: no NVIDIA driver" in first and "no GPUs" in second


def test_gpus_help_is_fast_and_lists_flags():
    started = time.monotonic()
    result = run_mlkit("gpus", "--help")
    assert result.returncode == 0
    for flag in ("--json", "--watch", "--interval"):
        assert flag in result.stdout
    assert time.monotonic() - started < 30


def test_watch_on_a_terminal_is_a_live_view_and_ctrl_c_exits_0():
    import pty
    import select

    env = {**os.environ, "MLKIT_FAKE_NVML": "four_idle", "COLUMNS": "220"}
    pid, fd = pty.fork()
    if pid == 0:  # the child: mlkit on a pseudo-terminal
        os.execvpe(sys.executable, [sys.executable, "-m", "mlkit", "gpus", "--watch", "-n", "0.2"], env)
    screen = b""
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline and screen.count(b"GPU-f4ce0003") < 2:  # two refreshes
            if select.select([fd], [], [], 0.2)[0]:
                try:
                    screen += os.read(fd, 65536)
                except OSError:
                    break
    finally:
        os.kill(pid, signal.SIGINT)
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    text = screen.decode(errors="replace")
    assert text.count("GPU-f4ce0003") >= 2, text[-2000:]
    assert "Ctrl-C to quit" in text and "stand-in NVML scenario 'four_idle'" in text
    assert os.waitstatus_to_exitcode(status) == 0
