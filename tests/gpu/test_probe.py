"""The probe: the real absent-driver path on this machine, and every stand-in scenario."""

from __future__ import annotations

import pytest

from mlkit.gpu import probe
from mlkit.gpu.fake import SCENARIOS


def test_real_probe_without_driver_reports_zero_gpus_and_why():
    """No stand-in: this machine's real pynvml cannot load libnvidia-ml (on a GPU box: skipped)."""
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError_LibraryNotFound:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA driver")
    report = probe()
    assert report.gpus == []
    assert report.reason == "no NVIDIA driver: NVML library libnvidia-ml.so.1 not found"
    assert report.driver_version is None


def test_four_idle_fields(fake_nvml):
    fake_nvml("four_idle")
    report = probe()
    assert report.reason is None
    assert report.driver_version == "580.95.05"
    assert report.cuda_version == "13.0"
    assert [g.index for g in report.gpus] == [0, 1, 2, 3]
    gpu = report.gpus[0]
    assert gpu.name == "NVIDIA H100 80GB HBM3"
    assert gpu.uuid.startswith("GPU-")
    assert len({g.uuid for g in report.gpus}) == 4
    assert gpu.pci_bus_id == "00000000:18:00.0"
    # nvmlMemory_v2: used excludes the driver's reservation, free = total - reserved - used
    assert gpu.memory_total == 81559 * 1024**2
    assert gpu.memory_used == 4 * 1024**2
    assert gpu.memory_free == gpu.memory_total - 512 * 1024**2 - gpu.memory_used
    assert (gpu.utilization_gpu, gpu.utilization_memory) == (0, 0)
    assert gpu.temperature == 31
    assert gpu.power_draw == 72.0 and gpu.power_limit == 700.0  # mW -> W
    assert (gpu.sm_clock, gpu.sm_clock_max) == (345, 1980)
    assert gpu.compute_capability == "9.0"
    assert gpu.mig_mode is False and gpu.mig_instances == []
    assert gpu.processes == []
    assert gpu.throttle_reasons == ["gpu_idle"]
    assert gpu.energy_mj is not None and gpu.energy_mj > 0
    assert not gpu.lost


def test_one_busy_foreign_processes(fake_nvml):
    fake_nvml("one_busy_foreign")
    report = probe()
    busy, idle = report.gpus
    assert busy.utilization_gpu == 95
    assert busy.memory_used > 30 * 1024**3
    assert busy.throttle_reasons == ["sw_power_cap"]
    (proc,) = busy.processes
    assert proc.pid == 1 and proc.used_memory == 30 * 1024**3
    assert proc.mlkit_run_id is None  # not an mlkit lease
    assert idle.processes == []


def test_mig_instances_with_their_uuids(fake_nvml):
    fake_nvml("mig")
    report = probe()
    card, plain = report.gpus
    assert card.mig_mode is True and plain.mig_mode is False
    assert card.utilization_gpu is None  # NotSupported on a MIG-enabled parent
    assert [m.uuid[:4] for m in card.mig_instances] == ["MIG-"] * 3
    assert [m.gpu_instance_id for m in card.mig_instances] == [1, 2, 3]
    assert all(m.parent_uuid == card.uuid and m.index == 0 for m in card.mig_instances)
    assert [m.memory_total // 1024**3 for m in card.mig_instances] == [40, 20, 10]
    busy = card.mig_instances[1]
    assert [p.pid for p in busy.processes] == [1] and busy.memory_used == 12 * 1024**3
    assert card.mig_instances[0].processes == []
    assert set(report.by_uuid()) == {card.uuid, plain.uuid, *(m.uuid for m in card.mig_instances)}


def test_field_raises_become_none(fake_nvml):
    fake_nvml("field_raises")
    report = probe()
    first, second = report.gpus
    for name in ("power_draw", "power_limit", "temperature", "sm_clock", "sm_clock_max", "energy_mj",
                 "utilization_gpu", "throttle_reasons"):  # fmt: skip
        assert getattr(first, name) is None, name
    assert first.memory_total is not None and first.name == "NVIDIA GeForce RTX 4090"
    assert first.mig_mode is None  # NotSupported: a consumer card has no MIG
    # NoPermission on processes, FunctionNotFound on energy, NotSupported on compute capability
    assert second.processes == [] and second.energy_mj is None and second.compute_capability is None
    assert second.power_draw == 72.0
    assert not first.lost and not second.lost


def test_gpu_lost_is_reported_not_fatal(fake_nvml):
    fake_nvml("gpu_lost")
    report = probe()
    assert [g.lost for g in report.gpus] == [False, True, False]
    lost = report.gpus[1]
    assert lost.error == "GPU is lost"
    assert report.gpus[2].name == "NVIDIA H100 80GB HBM3"
    assert report.reason is None


def test_gpu_lost_mid_run_via_state(fake_nvml, fake_state):
    fake_nvml("four_idle")
    assert not probe().gpus[3].lost
    fake_state.set(3, lost=True)
    assert [g.lost for g in probe().gpus] == [False, False, False, True]


def test_none_driver_without_gpus(fake_nvml):
    fake_nvml("none")
    report = probe()
    assert report.gpus == []
    assert report.driver_version == "580.95.05"
    assert report.reason == "the NVIDIA driver (580.95.05) reports no GPUs"


@pytest.mark.parametrize(
    ("scenario", "words"),
    [("no_driver", "no NVIDIA driver"), ("driver_not_loaded", "installed but not loaded")],
)
def test_init_failures(fake_nvml, scenario, words):
    fake_nvml(scenario)
    report = probe()
    assert report.gpus == [] and words in report.reason


def test_state_file_changes_are_seen(fake_nvml, fake_state):
    fake_nvml("four_idle")
    fake_state.set(
        2, memory_used=70 * 1024**3, util_gpu=88, processes=[{"pid": 1, "used_memory": 70 * 1024**3}]
    )
    gpu = probe().gpus[2]
    assert gpu.utilization_gpu == 88 and gpu.memory_used == 70 * 1024**3 and len(gpu.processes) == 1
    fake_state.set(2, memory_used=0, util_gpu=0, processes=[])
    gpu = probe().gpus[2]
    assert gpu.utilization_gpu == 0 and gpu.processes == []


def test_probe_shuts_nvml_down(fake_nvml):
    from mlkit.gpu import fake

    fake_nvml("four_idle")
    probe()
    probe()
    assert fake._init_count == 0


def test_every_scenario_probes(fake_nvml):
    for scenario in SCENARIOS:
        fake_nvml(scenario)
        report = probe()
        assert report.gpus or report.reason, scenario


def test_unknown_scenario_is_an_error(fake_nvml):
    from mlkit.errors import UsageError

    fake_nvml("seven_gpus")
    with pytest.raises(UsageError, match="no such stand-in NVML scenario"):
        probe()
