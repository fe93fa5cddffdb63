"""An inherited CUDA_VISIBLE_DEVICES (a shell's, another scheduler's, a parent run's) narrows what
mlkit sees and hands out to the GPUs it names, as CUDA would; the host ledger still arbitrates them."""

from __future__ import annotations

import json
import os

import pytest

from mlkit.errors import GpuUnavailableError
from mlkit.gpu import GpuRequest, probe, reserve

from helpers import run_mlkit


def test_probe_and_reserve_see_only_the_inherited_gpus(fake_nvml, monkeypatch):
    fake_nvml("four_idle")
    every = {g.index: g.uuid for g in probe().gpus}
    assert sorted(every) == [0, 1, 2, 3]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"2,{every[0]}")  # an index and a UUID, CUDA's order
    assert [g.index for g in probe().gpus] == [2, 0]
    with reserve(GpuRequest.parse("all"), run_id="a" * 32, owner_pid=os.getpid()) as lease:
        assert sorted(g.index for g in lease.gpus) == [0, 2]
        assert lease.env["CUDA_VISIBLE_DEVICES"] == ",".join(g.uuid for g in lease.gpus)
        # the ledger still holds them: another run, whatever it inherited, cannot take them
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
        with reserve(GpuRequest.parse("2"), run_id="b" * 32, owner_pid=os.getpid()) as other:
            assert sorted(g.index for g in other.gpus) == [1, 3]
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
        with pytest.raises(GpuUnavailableError):
            reserve(GpuRequest.parse("1"), run_id="c" * 32, owner_pid=os.getpid())


@pytest.mark.parametrize(
    "value", ["", "-1", "-1,0", "7", "7,0", "GPU-dead,1"]
)  # CUDA stops at the first bad entry
def test_an_inherited_list_that_names_no_gpu_leaves_none(fake_nvml, monkeypatch, value):
    fake_nvml("four_idle")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    report = probe()
    assert report.gpus == [] and "CUDA_VISIBLE_DEVICES" in (report.reason or "")
    with reserve(GpuRequest.parse("auto"), run_id="a" * 32, owner_pid=os.getpid()) as lease:
        assert lease.gpus == []  # auto runs on the CPU, as CUDA would


def test_a_run_started_with_an_inherited_list_gets_a_gpu_from_it(fake_nvml, tmp_path):
    fake_nvml("four_idle")
    project = tmp_path / "p"
    project.mkdir()
    (project / "MLproject").write_text("entry_points:\n  main:\n    command: \"python -c 'print(1)'\"\n")
    result = run_mlkit(
        "run", str(project), "--env-manager", "local", "--gpus", "1", "--system-metrics-interval", "0",
        "--json", env={"CUDA_VISIBLE_DEVICES": "3"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    from mlkit.tracking.store import FileStore

    tags = FileStore(tmp_path / "mlruns").get_run(doc["run_id"]).data.tags
    assert tags["mlkit.gpu.uuids"] == {g.index: g.uuid for g in probe().gpus}[3]


def test_a_repeated_entry_ends_the_list_as_cuda_ends_it(fake_nvml, monkeypatch):
    fake_nvml("four_idle")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,1,2")
    assert [g.index for g in probe().gpus] == [1]


_NESTED = r"""
import json, os, sys
from mlkit.errors import GpuUnavailableError
from mlkit.gpu import GpuRequest, reserve
try:
    lease = reserve(GpuRequest.parse(sys.argv[1]), run_id="d" * 32, owner_pid=os.getpid())
    print(json.dumps({"uuids": lease.uuids, "arbiter": lease.tags.get("mlkit.gpu.arbiter")}))
except GpuUnavailableError as exc:
    print(json.dumps({"error": exc.message}))
"""


_HOLDER = r"""
import json, os, time
from mlkit.gpu import GpuRequest, reserve
lease = reserve(GpuRequest.parse("2"), run_id="q" * 32, owner_pid=os.getpid())
print(json.dumps(lease.env["CUDA_VISIBLE_DEVICES"]), flush=True)
time.sleep(60)
"""


def _nested(env: dict[str, str], request: str) -> dict:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _NESTED, request], env={**os.environ, **env},
                         capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout)


def test_a_nested_run_uses_its_parent_runs_gpus_and_only_its_descendants_may(fake_nvml):
    """An entry point that itself calls `mlkit run` (a pipeline step) inherits its run's
    CUDA_VISIBLE_DEVICES and MLKIT_RUN_ID: it gets those GPUs within the parent's lease (the
    ledger is not asked again; before, they read as taken and the nested run failed). A process
    that is not the lease holder's descendant gets nothing from that lease."""
    import subprocess
    import sys

    from mlkit.gpu.ledger import read_leases

    fake_nvml("four_idle")
    parent = "p" * 32
    with reserve(GpuRequest.parse("2"), run_id=parent, owner_pid=os.getpid()) as lease:
        env = {"MLKIT_RUN_ID": parent, "CUDA_VISIBLE_DEVICES": lease.env["CUDA_VISIBLE_DEVICES"]}
        got = _nested(env, "1")
        assert got["uuids"][0] in lease.uuids and got["arbiter"] == f"run {parent}"
        assert sorted(_nested(env, "all")["uuids"]) == sorted(lease.uuids)
        assert "inside run" in _nested(env, "3")["error"]  # the parent has two
        assert {r.run_id for r in read_leases()} == {parent}  # nothing added to the ledger
        # the same variables in a process the lease's holder did not start: no borrowing
        holder = subprocess.Popen([sys.executable, "-c", _HOLDER], env=os.environ.copy(),
                                  stdout=subprocess.PIPE, text=True)  # fmt: skip
        try:
            theirs = json.loads(holder.stdout.readline())  # type: ignore[union-attr]
            stolen = _nested({"MLKIT_RUN_ID": "q" * 32, "CUDA_VISIBLE_DEVICES": theirs}, "1")
            assert "error" in stolen, stolen
        finally:
            holder.kill()
            holder.wait()
