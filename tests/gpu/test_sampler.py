"""The system-metrics sampler against a real FileStore run, with the stand-in NVML."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from mlkit.gpu import SystemMetricsSampler, probe
from mlkit.tracking.store import FileStore

GPU_KEYS = [
    "utilization_percentage",
    "memory_usage_megabytes",
    "memory_usage_percentage",
    "power_usage_watts",
    "power_usage_percentage",
    "temperature_celsius",
    "sm_clock_mhz",
    "throttle_reasons",
]


@pytest.fixture
def run(store_root):
    store = FileStore(store_root)
    experiment = store.get_or_create_experiment("sampler")
    return store, store.create_run(experiment).info.run_id


@pytest.fixture
def busy_tree():
    """A real process with a child, both burning a little CPU."""
    code = (
        "import subprocess, sys, time\n"
        "c = subprocess.Popen([sys.executable, '-c', 'import time\\nwhile True: time.sleep(0.01)'])\n"
        "end = time.time() + 60\n"
        "while time.time() < end: sum(range(1000)); time.sleep(0.005)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    yield proc
    import psutil

    for child in psutil.Process(proc.pid).children(recursive=True):
        child.kill()
    proc.kill()
    proc.wait()


def wait_for_steps(store, run_id, key, n, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(store.get_metric_history(run_id, key)) >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"{key}: fewer than {n} samples")


def test_logs_the_runs_own_gpus_and_the_summary(fake_nvml, fake_state, run, busy_tree):
    fake_nvml("four_idle")
    store, run_id = run
    gpus = probe().gpus
    fake_state.set(2, util_gpu=80, memory_used=10_000_000_000, power_mw=350_000)
    sampler = SystemMetricsSampler(store, run_id, [gpus[2].uuid, gpus[3].uuid], interval=0.05)
    sampler.start(busy_tree.pid)
    wait_for_steps(store, run_id, "system/process_memory_rss_megabytes", 8)
    summary = sampler.stop()
    data = store.get_run(run_id).data
    for key in GPU_KEYS:  # index inside the run: GPU 2 is gpu_0, GPU 3 is gpu_1
        assert f"system/gpu_0_{key}" in data.metrics and f"system/gpu_1_{key}" in data.metrics
    assert not any(k.startswith(("system/gpu_2", "system/gpu_3")) for k in data.metrics)
    history = store.get_metric_history(run_id, "system/gpu_0_utilization_percentage")
    assert [m.step for m in history][:3] == [0, 1, 2] and {m.value for m in history} == {80.0}
    assert {m.value for m in store.get_metric_history(run_id, "system/gpu_1_utilization_percentage")} == {0.0}
    assert data.metrics["system/gpu_0_memory_usage_megabytes"] == 10_000.0  # MLflow's MB: / 1e6
    assert data.metrics["system/gpu_0_power_usage_watts"] == 350.0
    assert data.metrics["system/gpu_0_power_usage_percentage"] == 50.0
    assert data.metrics["system/gpu_0_temperature_celsius"] == 33.0
    assert data.metrics["system/gpu_0_throttle_reasons"] == 1.0
    for key in ("cpu_utilization_percentage", "system_memory_usage_megabytes", "system_memory_usage_percentage",
                "disk_usage_percentage", "network_receive_megabytes", "process_cpu_utilization_percentage"):  # fmt: skip
        assert f"system/{key}" in data.metrics
    # the tree: parent and child, each at least a few MB resident
    assert data.metrics["system/process_memory_rss_megabytes"] > 5
    assert summary["system/gpu_0_peak_memory_megabytes"] == 10_000.0
    assert summary["system/gpu_0_mean_utilization_percentage"] == 80.0
    assert summary["system/gpu_1_mean_utilization_percentage"] == 0.0
    # the fake energy counter runs at the power draw: 350 W for the sampler's lifetime
    assert 0 < summary["system/gpu_0_energy_wh"] < 350 * 30 / 3600
    assert summary["system/gpu_0_energy_wh"] > 4 * summary["system/gpu_1_energy_wh"]
    for key, value in summary.items():
        assert data.metrics[key] == value
    assert data.tags["mlkit.system_metrics.ticks"] == str(sampler.step)
    assert sampler.failed_ticks == 0


def test_energy_falls_back_to_integrated_power(fake_nvml, run):
    fake_nvml("field_raises")  # GPU 1: energy counter FunctionNotFound; GPU 0: no power either
    store, run_id = run
    gpus = probe().gpus
    sampler = SystemMetricsSampler(store, run_id, [gpus[0].uuid, gpus[1].uuid], interval=0.05)
    sampler.start(sampler_pid())
    wait_for_steps(store, run_id, "system/gpu_1_power_usage_watts", 4)
    time.sleep(0.05)
    summary = sampler.stop()
    elapsed = sampler.step * 0.05
    assert "system/gpu_0_energy_wh" not in summary
    assert "system/gpu_0_power_usage_watts" not in store.get_run(run_id).data.metrics
    assert "system/gpu_0_memory_usage_megabytes" in store.get_run(run_id).data.metrics
    # 72 W held for the sampler's life (at least the ticks' span)
    assert 72 * elapsed / 3600 * 0.8 <= summary["system/gpu_1_energy_wh"] <= 72 * 10 / 3600


def sampler_pid() -> int:
    import os

    return os.getpid()


def test_a_failing_tick_is_skipped_and_counted(fake_nvml, run):
    fake_nvml("four_idle")
    store, run_id = run

    class Flaky:
        calls = 0

        def log_metrics(self, run_id, metrics, step=0):
            Flaky.calls += 1
            if Flaky.calls % 2:
                raise OSError("disk full")
            store.log_metrics(run_id, metrics, step=step)

        def set_tags(self, run_id, tags):
            store.set_tags(run_id, tags)

    sampler = SystemMetricsSampler(Flaky(), run_id, [probe().gpus[0].uuid], interval=10)
    sampler.start(sampler_pid())
    results = [sampler.tick() for _ in range(4)]
    assert [r is None for r in results] == [True, False, True, False]
    assert sampler.failed_ticks == 2 and sampler.step == 2
    assert sampler.errors[0] == "OSError: disk full"
    summary = sampler.stop()  # the summary's write fails too: still no exception
    assert "system/gpu_0_peak_memory_megabytes" in summary
    assert store.get_run(run_id).data.tags["mlkit.system_metrics.failed_ticks"] == "2"


def test_lost_gpu_mid_run_does_not_stop_sampling(fake_nvml, fake_state, run):
    fake_nvml("four_idle")
    store, run_id = run
    sampler = SystemMetricsSampler(store, run_id, [probe().gpus[0].uuid], interval=10)
    sampler.start(sampler_pid())
    assert "system/gpu_0_utilization_percentage" in sampler.tick()
    fake_state.set(0, lost=True)
    metrics = sampler.tick()
    assert metrics is not None and "system/cpu_utilization_percentage" in metrics
    assert not any(k.startswith("system/gpu_0") for k in metrics)
    sampler.stop()


def test_interval_zero_is_off(fake_nvml, run):
    fake_nvml("four_idle")
    store, run_id = run
    sampler = SystemMetricsSampler(store, run_id, [probe().gpus[0].uuid], interval=0)
    sampler.start(sampler_pid())
    time.sleep(0.1)
    assert sampler.stop() == {}
    assert store.get_run(run_id).data.metrics == {}


def test_no_driver_still_logs_cpu(run):
    store, run_id = run
    sampler = SystemMetricsSampler(store, run_id, ["GPU-00000000-dead-beef"], interval=10)
    sampler.start(sampler_pid())  # the real NVML cannot load here (or the UUID is unknown)
    metrics = sampler.tick()
    assert "system/cpu_utilization_percentage" in metrics
    assert not any(k.startswith("system/gpu_") for k in metrics)
    sampler.stop()


def test_nvml_initialised_once(fake_nvml, run):
    from mlkit.gpu import fake

    fake_nvml("four_idle")
    store, run_id = run
    sampler = SystemMetricsSampler(store, run_id, [probe().gpus[0].uuid], interval=10)
    sampler.start(sampler_pid())
    assert fake._init_count == 1
    for _ in range(5):
        sampler.tick()
    assert fake._init_count == 1
    sampler.stop()
    assert fake._init_count == 0


def test_one_tick_costs_under_5ms_cpu(fake_nvml, run):
    fake_nvml("four_idle")
    store, run_id = run
    sampler = SystemMetricsSampler(store, run_id, [probe().gpus[0].uuid], interval=1000)
    sampler.start(sampler_pid())
    sampler.tick()
    n = 100
    cpu = time.process_time()
    for _ in range(n):
        sampler.tick()
    per_tick_ms = (time.process_time() - cpu) / n * 1000
    sampler.stop()
    assert per_tick_ms < 5, f"{per_tick_ms:.2f} ms CPU per tick"
