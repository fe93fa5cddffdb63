"""The selection policy: a pure function of a probe snapshot, the request and the leased UUIDs."""

from __future__ import annotations

import pytest

from mlkit.errors import UsageError
from mlkit.gpu import GpuRequest, probe
from mlkit.gpu.select import cuda_env, select

GiB = 1024**3


def snapshot(fake_nvml, scenario):
    fake_nvml(scenario)
    return probe(leases=[])


def picked(selection):
    assert selection.ok, selection.message
    return [g.label for g in selection.gpus]


def test_parse_forms():
    assert GpuRequest.parse("2").kind == "count" and GpuRequest.parse("2").count == 2
    assert GpuRequest.parse("0").kind == "none"  # a bare number is a count
    assert GpuRequest.parse("0,2").ids == ("0", "2")
    assert GpuRequest.parse("1,").ids == ("1",)
    assert GpuRequest.parse("device=3").ids == ("3",)
    assert GpuRequest.parse("GPU-f4ce0001,MIG-0a1b").ids == ("GPU-f4ce0001", "MIG-0a1b")
    for word in ("auto", "none", "all", "AUTO"):
        assert GpuRequest.parse(word).kind == word.lower()
    request = GpuRequest.parse("1", min_free_memory="20GiB", max_utilization=10, exclude_busy=True)
    assert request.min_free_memory == 20 * GiB
    assert request.describe() == "1 GPU with ≥20.0 GiB free, ≤10% busy, no other processes"


@pytest.mark.parametrize("spec", ["two", "0,x", "GPU", "0,0", ",", "-1"])
def test_parse_rejects(spec):
    with pytest.raises(UsageError) as info:
        GpuRequest.parse(spec)
    assert "--gpus" in info.value.message and info.value.hint


def test_parse_rejects_bad_filters():
    with pytest.raises(UsageError, match="--max-gpu-util"):
        GpuRequest.parse("1", max_utilization=150)
    with pytest.raises(UsageError, match="--min-free-memory"):
        GpuRequest.parse("1", min_free_memory="lots")


def test_count_picks_in_stable_order_and_skips_leased(fake_nvml):
    report = snapshot(fake_nvml, "four_idle")
    assert picked(select(report, GpuRequest.parse("2"), set())) == ["GPU 0", "GPU 1"]
    leased = {report.gpus[0].uuid: "a1b2c3d4e5f6", report.gpus[2].uuid: "ffff0000"}
    assert picked(select(report, GpuRequest.parse("2"), leased)) == ["GPU 1", "GPU 3"]
    full = select(report, GpuRequest.parse("3"), leased)
    assert not full.ok and not full.fatal  # waiting can help
    assert "GPU 0 leased by run a1b2c3d4…" in full.message and "GPU 2 leased by run ffff0000…" in full.message
    assert "--wait" in full.hint


def test_least_loaded_first(fake_nvml):
    report = snapshot(fake_nvml, "one_busy_foreign")
    assert picked(select(report, GpuRequest.parse("1"), set())) == ["GPU 1"]
    # busy GPUs are allowed by default when nothing better is left...
    assert picked(select(report, GpuRequest.parse("2"), set())) == ["GPU 1", "GPU 0"]
    # ...but not with --exclude-busy
    strict = select(report, GpuRequest.parse("2", exclude_busy=True), set())
    assert not strict.ok and "GPU 0 runs 1 other process: pid 1" in strict.message


def test_filters(fake_nvml):
    report = snapshot(fake_nvml, "one_busy_foreign")
    mem = select(report, GpuRequest.parse("2", min_free_memory=60 * GiB), set())
    assert not mem.ok and "GPU 0 has 49.1 GiB free" in mem.message
    assert picked(select(report, GpuRequest.parse("1", min_free_memory=60 * GiB), set())) == ["GPU 1"]
    util = select(report, GpuRequest.parse("0,1", max_utilization=50), set())
    assert not util.ok and "GPU 0 is 95% busy" in util.why


def test_auto(fake_nvml):
    report = snapshot(fake_nvml, "one_busy_foreign")
    assert picked(select(report, GpuRequest.parse("auto"), set())) == ["GPU 1"]
    cpu = select(report, GpuRequest.parse("auto"), {report.gpus[1].uuid: "deadbeef99"})
    assert cpu.ok and cpu.gpus == []
    assert cpu.notice.startswith("no free GPU (") and cpu.notice.endswith("running on CPU")
    assert "GPU 1 leased by run deadbeef…" in cpu.notice and "GPU 0 runs 1 other process" in cpu.notice


def test_auto_for_several_ranks_takes_one_gpu_each_or_the_cpu(fake_nvml):
    """`mlkit run --nproc-per-node N` with --gpus auto asks for N GPUs: all N, or every rank on the CPU."""
    import dataclasses

    auto = GpuRequest.parse("auto")
    report = snapshot(fake_nvml, "four_idle")
    assert picked(select(report, dataclasses.replace(auto, count=2), set())) == ["GPU 0", "GPU 1"]
    eight = select(report, dataclasses.replace(auto, count=8), set())
    assert eight.ok and eight.gpus == [] and eight.notice == "4 usable GPUs for 8 ranks: running on CPU"
    report = snapshot(fake_nvml, "one_busy_foreign")
    short = select(report, dataclasses.replace(auto, count=2), set())
    assert short.ok and short.gpus == []
    assert short.notice.startswith("1 of the 2 GPUs needed free (GPU 0 runs 1 other process")
    assert dataclasses.replace(auto, count=2).describe() == "2 free GPUs"


@pytest.mark.parametrize("scenario", ["none", "no_driver"])
def test_no_gpus(fake_nvml, scenario):
    report = snapshot(fake_nvml, scenario)
    cpu = select(report, GpuRequest.parse("auto"), set())
    assert cpu.ok and cpu.gpus == [] and cpu.notice.endswith(": running on CPU")
    assert report.reason in cpu.notice
    one = select(report, GpuRequest.parse("1"), set())
    assert not one.ok and one.fatal
    assert one.message == f"--gpus 1: no GPU on this machine: {report.reason}"


def test_real_absent_driver_selection():
    report = probe()
    if report.gpus:
        pytest.skip("this machine has GPUs")
    one = select(report, GpuRequest.parse("1"), set())
    assert one.fatal and "no NVIDIA driver" in one.message


def test_too_many_is_fatal(fake_nvml):
    report = snapshot(fake_nvml, "four_idle")
    sel = select(report, GpuRequest.parse("5"), set())
    assert not sel.ok and sel.fatal and "has 4 usable GPUs, 5 asked for" in sel.message


def test_lists(fake_nvml):
    report = snapshot(fake_nvml, "four_idle")
    assert picked(select(report, GpuRequest.parse("2,0"), set())) == ["GPU 2", "GPU 0"]
    assert picked(select(report, GpuRequest.parse("3,"), set())) == ["GPU 3"]
    prefix = report.gpus[1].uuid[:12]
    assert picked(select(report, GpuRequest.parse(prefix), set())) == ["GPU 1"]
    missing = select(report, GpuRequest.parse("7,"), set())
    assert missing.fatal and "7: no such GPU" in missing.message
    with pytest.raises(UsageError, match="matches 4 GPUs"):
        select(report, GpuRequest.parse("GPU-f4ce"), set())
    with pytest.raises(UsageError, match="named twice"):
        select(report, GpuRequest.parse(f"1,{prefix}"), set())
    leased = select(report, GpuRequest.parse("0,1"), {report.gpus[1].uuid: "abcdef123456"})
    assert not leased.ok and not leased.fatal and "GPU 1 leased by run abcdef12…" in leased.message


def test_all(fake_nvml):
    report = snapshot(fake_nvml, "four_idle")
    assert picked(select(report, GpuRequest.parse("all"), set())) == ["GPU 0", "GPU 1", "GPU 2", "GPU 3"]
    assert not select(report, GpuRequest.parse("all"), {report.gpus[3].uuid}).ok


def test_mig(fake_nvml):
    report = snapshot(fake_nvml, "mig")
    card, plain = report.gpus
    # a whole GPU has the most free memory
    assert picked(select(report, GpuRequest.parse("1"), set())) == ["GPU 1"]
    # with it leased, the emptiest MIG instance (never the MIG-mode parent)
    sel = select(report, GpuRequest.parse("1"), {plain.uuid: "r1"})
    assert picked(sel) == ["GPU 0 MIG 1"]
    assert cuda_env(sel.gpus)["CUDA_VISIBLE_DEVICES"] == card.mig_instances[0].uuid
    # MIG instances only for one-GPU runs
    assert select(report, GpuRequest.parse("2"), set()).fatal
    assert picked(select(report, GpuRequest.parse("all"), set())) == ["GPU 1"]
    parent = select(report, GpuRequest.parse("0,"), set())
    assert parent.fatal and "in MIG mode; name one of its MIG instances" in parent.message
    mig_uuid = card.mig_instances[2].uuid
    assert picked(select(report, GpuRequest.parse(mig_uuid), set())) == ["GPU 0 MIG 3"]
    with pytest.raises(UsageError, match="MIG instance must be the run's only GPU"):
        select(report, GpuRequest.parse(f"{mig_uuid},1"), set())
    # --exclude-busy sees the foreign process on MIG 2; unknown utilisation passes --max-gpu-util
    busy = select(report, GpuRequest.parse(card.mig_instances[1].uuid, exclude_busy=True), set())
    assert not busy.ok and "GPU 0 MIG 2 runs 1 other process" in busy.message
    assert select(report, GpuRequest.parse(mig_uuid, max_utilization=5), set()).ok


def test_lost_gpu_is_never_picked(fake_nvml):
    report = snapshot(fake_nvml, "gpu_lost")
    assert picked(select(report, GpuRequest.parse("2"), set())) == ["GPU 0", "GPU 2"]
    assert select(report, GpuRequest.parse("3"), set()).fatal
    lost = select(report, GpuRequest.parse("1,"), set())
    assert lost.fatal and "is lost" in lost.message


def test_field_raises_unknowns(fake_nvml):
    report = snapshot(fake_nvml, "field_raises")
    # utilisation unknown on GPU 0: --max-gpu-util cannot exclude it
    assert picked(select(report, GpuRequest.parse("2", max_utilization=5), set())) == ["GPU 0", "GPU 1"]


def test_none_and_env(fake_nvml):
    report = snapshot(fake_nvml, "four_idle")
    none = select(report, GpuRequest.parse("none"), set())
    assert none.ok and none.gpus == [] and none.notice is None
    assert cuda_env([]) == {"CUDA_VISIBLE_DEVICES": "", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    env = cuda_env(select(report, GpuRequest.parse("2"), set()).gpus)
    assert env["CUDA_VISIBLE_DEVICES"] == f"{report.gpus[0].uuid},{report.gpus[1].uuid}"
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"


def test_select_is_pure(fake_nvml):
    report = snapshot(fake_nvml, "one_busy_foreign")
    before = repr(report)
    for spec in ("1", "2", "auto", "all", "0,1"):
        select(report, GpuRequest.parse(spec, exclude_busy=True), {report.gpus[0].uuid: "x"})
    assert repr(report) == before
