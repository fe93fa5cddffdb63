"""The Slurm backend's pure parts and its refusals, without a cluster: --backend-config and the
site file, the batch script, the multi-node srun/torchrun plan, GPU scoping inside an allocation,
and what happens with no Slurm to ask (exit 68, nothing created)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from mlkit.backends.slurm.config import parse_backend_config, resolve_config
from mlkit.backends.slurm.script import (
    Task,
    job_spec,
    node_argv,
    render_script,
    sbatch_lines,
    srun_argv,
)
from mlkit.errors import UsageError

from helpers import run_mlkit

PROJECT = "name: p\nentry_points:\n  main:\n    parameters:\n      x: {type: int, default: 1}\n    command: \"python -c 'print(1)'\"\n"


@pytest.fixture
def no_site(monkeypatch, tmp_path):
    monkeypatch.delenv("MLKIT_SLURM_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def test_backend_config_pairs_json_and_file(no_site, tmp_path):
    assert parse_backend_config("partition=gpu,time=4h,account=ml") == {
        "partition": "gpu",
        "time": "4h",
        "account": "ml",
    }
    assert parse_backend_config("nodelist=n1,n2,exclusive") == {"nodelist": "n1,n2", "exclusive": True}
    path = tmp_path / "slurm.json"
    path.write_text(json.dumps({"partition": "gpu", "qos": "high", "exclusive": True}))
    config = resolve_config(str(path))
    assert config.sbatch_args() == ["--exclusive", "--partition=gpu", "--qos=high"]
    config = resolve_config('{"time": "90m", "mem": "20GiB", "cpus_per_gpu": 4}')
    assert config.sbatch_args() == ["--cpus-per-gpu=4", "--mem=20480M", "--time=01:30:00"]
    assert resolve_config("time=1-00:00:00").options["time"] == "1-00:00:00"
    assert resolve_config("time=36h").options["time"] == "1-12:00:00"


def test_unknown_and_unsafe_keys_are_refused_with_the_list(no_site):
    with pytest.raises(UsageError) as exc:
        resolve_config("partitoin=gpu")
    assert "partitoin" in exc.value.message and all(k in exc.value.hint for k in ("partition", "time", "qos"))
    with pytest.raises(UsageError):
        resolve_config("partition=gpu\n#SBATCH --uid=0")
    with pytest.raises(UsageError):
        resolve_config("time=soon")


def test_site_file_gives_defaults_that_the_flag_overrides(monkeypatch, tmp_path):
    site = tmp_path / "slurm.yaml"
    site.write_text("partition: gpu\naccount: ml\nsetup:\n  - module load cuda/12\n")
    monkeypatch.setenv("MLKIT_SLURM_CONFIG", str(site))
    config = resolve_config("partition=debug")
    assert config.options == {"partition": "debug", "account": "ml"}
    assert config.setup == ("module load cuda/12",)
    monkeypatch.setenv("MLKIT_SLURM_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(UsageError):
        resolve_config(None)


def test_batch_script_and_array(no_site, tmp_path):
    config = resolve_config("partition=gpu,time=2h,signal-grace=90")
    lines = sbatch_lines(
        config, job_name="mlkit-x", output="/s/slurm-%A_%a.out", gpus=1, nodes=1, array="0-9%2"
    )
    assert lines[:6] == ["--job-name=mlkit-x", "--output=/s/slurm-%A_%a.out", "--open-mode=append", "--requeue",
                         "--signal=B:USR2@90", "--gpus=1"]  # fmt: skip
    assert "--array=0-9%2" in lines and "--partition=gpu" in lines and "--time=02:00:00" in lines
    text = render_script(
        lines, python="/opt/py/bin/python", spec_path=tmp_path / "job.json", setup=["module load x"]
    )
    assert text.startswith("#!/bin/bash\n#SBATCH --job-name=mlkit-x\n")
    assert text.rstrip().endswith(
        f"exec /opt/py/bin/python -m mlkit.backends.slurm.job {tmp_path / 'job.json'}"
    )
    assert "\nmodule load x\n" in text


def test_the_jobs_supervisor_gets_the_same_run_and_container_flags(tmp_path):
    from mlkit.backends.slurm.script import local_argv
    from mlkit.runner.options import RunOptions

    options = RunOptions(
        project_dir=tmp_path, params={"x": "2"}, gpus="2", container_engine="podman", build_image=True,
        docker_args=("shm-size=8g", "ipc=host"), on_finish="echo done",
    )  # fmt: skip
    argv = local_argv(options, "r" * 32, tmp_path / "mlruns")
    assert argv[:6] == ("run", str(tmp_path.resolve()), "--run-id", "r" * 32, "--backend", "local")
    joined = " ".join(argv)
    assert "-P x=2" in joined and "--gpus all" in joined and "--on-finish echo done" in joined
    assert "--container-engine podman --build-image" in joined
    assert "--docker-args shm-size=8g --docker-args ipc=host" in joined


def test_two_nodes_are_planned_as_one_supervisor_per_node_with_torchrun_on_the_first(no_site, tmp_path):
    config = resolve_config("")
    lines = sbatch_lines(config, job_name="j", output="o", gpus=4, nodes=2)
    assert "--nodes=2" in lines and "--ntasks-per-node=1" in lines and "--gpus-per-node=4" in lines
    assert not any(line.startswith("--gpus=") for line in lines)
    spec = tmp_path / "job.json"
    assert srun_argv("/py", spec, nodes=2) == [
        "srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1", "--label",
        "/py", "-m", "mlkit.backends.slurm.job", str(spec), "--node",
    ]  # fmt: skip
    base = ["run", "/p", "--run-id", "abc", "--backend", "local", "--gpus", "all"]
    for rank in (0, 1):
        assert node_argv(base, nnodes=2, node_rank=rank, head="gpu-a01", port=29400) == [
            *base,
            "--nnodes",
            "2",
            "--node-rank",
            str(rank),
            "--rdzv-endpoint",
            "gpu-a01:29400",
        ]
    doc = job_spec([Task("abc", tuple(base))], store_root=Path("/s"), nodes=2, rdzv_port=29400, python="/py")
    assert doc["nodes"] == 2 and doc["tasks"][0]["run_id"] == "abc"
    assert doc["tasks"][0]["argv"] == base


def test_nodes_plan_in_the_submitted_files(no_site, tmp_path, monkeypatch):
    """--nodes 2 --gpus 4 through the real CLI, with an sbatch that only records what it got."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sbatch").write_text(f'#!/bin/sh\ncp "$2" {tmp_path}/submitted.sh\necho 4242\n')
    (fake / "sbatch").chmod(0o755)
    proj = tmp_path / "p"
    proj.mkdir()
    (proj / "MLproject").write_text(PROJECT)
    done = run_mlkit("run", str(proj), "--backend", "slurm", "--nodes", "2", "--gpus", "4",
                     env={"PATH": f"{fake}:{os.environ['PATH']}"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    script = (tmp_path / "submitted.sh").read_text()
    assert "#SBATCH --nodes=2" in script and "#SBATCH --gpus-per-node=4" in script
    spec = json.loads((Path(script.split()[-1])).read_text())
    assert spec["nodes"] == 2 and spec["tasks"][0]["argv"][-4:] == [
        "--gpus",
        "all",
        "--system-metrics-interval",
        "5",
    ]


def _path_without_slurm(tmp_path: Path) -> str:
    bare = tmp_path / "bare"
    bare.mkdir()
    os.symlink(sys.executable, bare / "python3")
    return str(bare)


def test_no_slurm_installed_exits_68_and_creates_nothing(tmp_path, store_root):
    proj = tmp_path / "p"
    proj.mkdir()
    (proj / "MLproject").write_text(PROJECT)
    done = run_mlkit("run", str(proj), "--backend", "slurm", env={"PATH": _path_without_slurm(tmp_path)})
    assert done.returncode == 68, done.stderr
    assert done.stderr.count("\n") <= 2 and "sbatch: not found" in done.stderr and "hint:" in done.stderr
    assert not store_root.exists() or not any(p.name != "meta.yaml" for p in (store_root / "0").glob("*"))


def test_dry_run_shows_the_batch_script_without_slurm_and_creates_nothing(no_site, tmp_path, store_root):
    proj = tmp_path / "p"
    proj.mkdir()
    (proj / "MLproject").write_text(PROJECT)
    env = {"PATH": _path_without_slurm(tmp_path)}  # a laptop without the Slurm client can preview
    args = ("run", str(proj), "--backend", "slurm", "--dry-run", "--gpus", "2", "-P", "x=3",
            "--backend-config", "partition=gpu,time=4h", "--json")  # fmt: skip
    done = run_mlkit(*args, env=env)
    assert done.returncode == 0, done.stderr
    script = json.loads(done.stdout)["slurm_script"]
    lines = script.splitlines()
    for directive in ("--gpus=2", "--partition=gpu", "--time=04:00:00", "--requeue", "--signal=B:USR2@120"):
        assert f"#SBATCH {directive}" in lines
    assert lines[-1].startswith("exec ") and "-m mlkit.backends.slurm.job" in lines[-1]
    assert "<run-id>" in script
    shown = run_mlkit(*args[:-1], env=env)
    assert shown.returncode == 0 and "#SBATCH --partition=gpu" in shown.stdout
    assert "nothing submitted" in shown.stdout
    assert not store_root.exists()
    bad = run_mlkit(*args[:-2], "nosuch=1", env=env)  # the same checks as a submission
    assert bad.returncode == 2 and "unknown key 'nosuch'" in bad.stderr


def test_unreachable_controller_exits_68_and_leaves_no_run(tmp_path, store_root, monkeypatch):
    if shutil.which("sbatch") is None:
        if os.environ.get("CI"):
            pytest.fail("sbatch must be installed in CI")
        pytest.skip("sbatch is not installed")
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=nowhere\nSlurmctldHost=localhost\nSlurmctldPort=9\nMessageTimeout=1\n"
                    "AuthType=auth/munge\nNodeName=localhost CPUs=1\nPartitionName=debug Nodes=ALL Default=YES\n")  # fmt: skip
    proj = tmp_path / "p"
    proj.mkdir()
    (proj / "MLproject").write_text(PROJECT)
    done = run_mlkit("run", str(proj), "--backend", "slurm", env={"SLURM_CONF": str(conf)}, timeout=120)
    assert done.returncode == 68, done.stderr
    assert "cannot reach the Slurm controller" in done.stderr or "did not answer" in done.stderr
    listed = run_mlkit("runs", "list", "--csv")
    assert listed.stdout.count("\n") <= 1  # the header only: the run was removed again


def test_local_flags_refuse_slurm_only_options(tmp_path):
    proj = tmp_path / "p"
    proj.mkdir()
    (proj / "MLproject").write_text(PROJECT)
    done = run_mlkit("run", str(proj), "--nodes", "2")
    assert done.returncode == 2 and "--nodes needs --backend slurm" in done.stderr


def test_gpus_inside_an_allocation_are_the_allocations(monkeypatch, tmp_path):
    """Inside a Slurm job mlkit selects among the job's GPUs only (NVML sees the host's four, in
    the fake scenario), trusts Slurm's list, and writes nothing to the host's lease ledger."""
    from mlkit.gpu import GpuRequest, probe, reserve
    from mlkit.gpu.allocation import allocated, scope
    from mlkit.gpu.devices import GpuReport

    monkeypatch.setenv("MLKIT_FAKE_NVML", "no_driver")  # Slurm's list is trusted without NVML
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert allocated() is None
    monkeypatch.setenv("SLURM_JOB_ID", "12")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,3")
    assert allocated() == []  # no GPU from Slurm: the submitting shell's CUDA_VISIBLE_DEVICES
    monkeypatch.setenv("SLURM_JOB_GPUS", "1,3")  # as Slurm sets it beside CUDA_VISIBLE_DEVICES
    assert allocated() == ["1", "3"]
    report = scope(GpuReport(reason="no NVIDIA driver"), ["1", "3"])
    assert [g.uuid for g in report.gpus] == ["slurm-gpu-1", "slurm-gpu-3"]
    lease = reserve(GpuRequest.parse("1"), run_id="r" * 32, owner_pid=os.getpid())
    assert lease.env["CUDA_VISIBLE_DEVICES"] == "1" and lease.tags["mlkit.gpu.arbiter"] == "slurm"
    lease = reserve(GpuRequest.parse("all"), run_id="r" * 32, owner_pid=os.getpid())
    assert lease.env["CUDA_VISIBLE_DEVICES"] == "1,3"
    with pytest.raises(Exception) as exc:
        reserve(GpuRequest.parse("3"), run_id="r" * 32, owner_pid=os.getpid())
    assert "only its GPUs" in str(exc.value)
    assert [g.uuid for g in probe().gpus] == ["slurm-gpu-1", "slurm-gpu-3"]
    assert not (tmp_path / "state").exists() or not any((tmp_path / "state").iterdir())


def test_allocation_gpus_that_nvml_sees_are_matched_by_index(monkeypatch, tmp_path):
    from mlkit.gpu import GpuRequest, probe, reserve

    monkeypatch.setenv("MLKIT_FAKE_NVML", "four_idle")
    monkeypatch.setenv("SLURM_JOB_ID", "12")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    monkeypatch.setenv("GPU_DEVICE_ORDINAL", "2,0")
    report = probe()
    assert [g.index for g in report.gpus] == [2, 0]  # Slurm's order, NVML's details
    assert all(g.name and not g.uuid.startswith("slurm-gpu-") for g in report.gpus)
    lease = reserve(GpuRequest.parse("all"), run_id="r" * 32, owner_pid=os.getpid())
    assert sorted(lease.env["CUDA_VISIBLE_DEVICES"].split(",")) == ["0", "2"]
    assert lease.tags["mlkit.gpu.count"] == "2"


def test_a_job_slurm_gave_no_gpus_uses_none_of_its_inherited_ones(monkeypatch, tmp_path):
    """sbatch exports the submitting shell's environment: a CUDA_VISIBLE_DEVICES=0,1 from there
    reaches a job Slurm gave no GPUs. Those GPUs are another job's: the run gets none."""
    from mlkit.errors import GpuUnavailableError
    from mlkit.gpu import GpuRequest, probe, reserve

    monkeypatch.setenv("MLKIT_FAKE_NVML", "four_idle")
    monkeypatch.setenv("SLURM_JOB_ID", "13")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    for name in ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "GPU_DEVICE_ORDINAL", "SLURM_GPUS_ON_NODE"):
        monkeypatch.delenv(name, raising=False)
    assert probe().gpus == []
    with pytest.raises(GpuUnavailableError):
        reserve(GpuRequest.parse("1"), run_id="r" * 32, owner_pid=os.getpid())
    lease = reserve(GpuRequest.parse("auto"), run_id="r" * 32, owner_pid=os.getpid())
    assert lease.gpus == [] and lease.env["CUDA_VISIBLE_DEVICES"] == ""


def test_listing_with_slurm_unreachable_keeps_the_last_known_status(tmp_path, store_root):
    if shutil.which("squeue") is None:
        if os.environ.get("CI"):
            pytest.fail("squeue must be installed in CI")
        pytest.skip("squeue is not installed")
    from mlkit.tracking.store import FileStore

    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=nowhere\nSlurmctldHost=localhost\nSlurmctldPort=9\nMessageTimeout=1\n"
                    "AuthType=auth/munge\nNodeName=localhost CPUs=1\nPartitionName=debug Nodes=ALL Default=YES\n")  # fmt: skip
    store = FileStore(store_root)
    run = store.create_run(
        "0", status="SCHEDULED", tags={"mlkit.slurm.job_id": "77", "mlkit.slurm.state": "PENDING"}
    )
    done = run_mlkit(
        "runs", "list", "--csv", env={"SLURM_CONF": str(conf), "MLKIT_SLURM_TIMEOUT": "3"}, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "Slurm cannot be asked" in done.stderr and "last known status" in done.stderr
    assert f"{run.info.run_id},".split(",")[0] in done.stdout and "SCHEDULED,77 PENDING" in done.stdout
    assert FileStore(store_root).get_run(run.info.run_id).info.status == "SCHEDULED"


def test_a_slurm_runs_dead_supervisor_is_left_to_slurm_not_marked_lost(store_root):
    """A RUNNING run inside a Slurm job whose supervisor is gone is reconciled from Slurm (which
    says how the job ended), never guessed `lost`; the same run without a job id is marked lost."""
    import subprocess

    from mlkit.procid import hostname
    from mlkit.tracking.store import FileStore

    dead = subprocess.Popen(["true"])
    dead.wait()
    owner = {"mlkit.host": hostname(), "mlkit.pid": str(dead.pid), "mlkit.pid_start": "1.0"}
    store = FileStore(store_root)
    slurm_run = store.create_run("0", tags={**owner, "mlkit.slurm.job_id": "99"})
    local_run = store.create_run("0", tags=owner)
    assert store.mark_lost_runs() == [local_run.info.run_id]
    assert store.get_run(slurm_run.info.run_id).info.status == "RUNNING"


@pytest.mark.parametrize(
    ("state", "run_status", "status", "reason"),
    [
        ("NODE_FAIL", "RUNNING", "FAILED", "node_fail"),
        ("OUT_OF_MEMORY", "RUNNING", "FAILED", "out_of_memory"),
        ("PREEMPTED", "KILLED", "KILLED", "preempted"),
        ("DEADLINE", "SCHEDULED", "KILLED", "timeout"),
        ("BOOT_FAIL", "SCHEDULED", "FAILED", "node_fail"),
        ("COMPLETED", "RUNNING", "FAILED", "slurm_failed"),  # gone without the run recording its end
        ("COMPLETED", "FINISHED", None, None),  # the run's own record stands
        ("CANCELLED", "FINISHED", None, None),  # a cancel that came after the run finished
    ],
)
def test_slurm_end_states_that_the_test_cluster_cannot_produce(state, run_status, status, reason):
    """(FAILED, CANCELLED, TIMEOUT and COMPLETED are produced for real in test_status.py.)"""
    from mlkit.backends.slurm.status import JobView, interpret
    from mlkit.tracking.entities import Run, RunData, RunInfo

    info = RunInfo("r" * 32, "r" * 32, "0", "n", "u", run_status, 1, None, "file:///x")
    run = Run(info, RunData(params={}, metrics={}, tags={"mlkit.slurm.job_id": "5"}))
    change = interpret(run, JobView("5", state, nodes="gpu-a07", exit_code="0:9", source="sacct"))
    assert change.final and change.tags["mlkit.slurm.state"] == state
    assert change.status == status
    assert change.tags.get("mlkit.failure_reason") == reason
    if reason == "node_fail":
        assert change.tags["mlkit.failed_node"] == "gpu-a07"


def test_cancel_refuses_a_run_that_is_not_a_slurm_run(store_root):
    from mlkit.tracking.store import FileStore

    run = FileStore(store_root).create_run("0")
    done = run_mlkit("runs", "cancel", run.info.run_id)
    assert done.returncode == 2 and "not a Slurm run" in done.stderr
    assert FileStore(store_root).get_run(run.info.run_id).info.status == "RUNNING"


def test_sbatch_values_are_one_word_each(no_site, tmp_path):
    """sbatch splits an #SBATCH line on whitespace, `"` toggles quoting, `#` starts a comment and a
    newline ends the directives: names are made safe, a comment is quoted, the rest is refused."""
    from mlkit.backends.slurm.script import check_path

    lines = sbatch_lines(resolve_config("comment=my experiment --nice=5"), job_name="mlkit-my proj-a b\ntouch x",
                         output="/s/o", gpus=0, nodes=1)  # fmt: skip
    assert lines[0] == "--job-name=mlkit-my_proj-a_b_touch_x"
    assert '--comment="my experiment --nice=5"' in lines and not any(x.startswith("--nice") for x in lines)
    for bad in ('x"y', "x # y", "x\\y", "x'y"):
        with pytest.raises(UsageError):
            resolve_config({"comment": bad})
    with pytest.raises(UsageError):
        resolve_config({"comment": "one\n#SBATCH --uid=0"})
    check_path(tmp_path / "mlruns", "--store")
    for bad in ("my store", "a#b", 'a"b', "a\\b", "a\nb", "a'b"):
        with pytest.raises(UsageError) as exc:
            check_path(tmp_path / bad, "--store")
        assert "\n" not in exc.value.message.replace(repr(str(tmp_path / bad)), "")


def test_a_store_path_sbatch_cannot_read_is_refused_before_anything_exists(no_site, tmp_path):
    proj = tmp_path / "p"
    proj.mkdir()
    (proj / "MLproject").write_text(PROJECT)
    store = tmp_path / "my store"
    for extra in ((), ("--dry-run",)):
        done = run_mlkit("run", str(proj), "--backend", "slurm", "--store", str(store), *extra)
        assert done.returncode == 2, done.stderr
        assert "--store" in done.stderr and done.stderr.count("\n") <= 2
    assert not store.exists()


UNREACHABLE_CONF = ("ClusterName=nowhere\nSlurmctldHost=localhost\nSlurmctldPort=9\nMessageTimeout=1\n"
                    "AuthType=auth/munge\nNodeName=localhost CPUs=1\nPartitionName=debug Nodes=ALL Default=YES\n")  # fmt: skip


def _slurm_run(store_root: Path, status: str = "SCHEDULED") -> str:
    from mlkit.tracking.store import FileStore

    tags = {"mlkit.slurm.job_id": "77", "mlkit.slurm.state": "PENDING"}
    return FileStore(store_root).create_run("0", status=status, tags=tags).info.run_id


def test_slurm_timeout_takes_a_duration_and_a_bad_one_is_a_usage_error(tmp_path, store_root):
    if shutil.which("squeue") is None:
        pytest.skip("squeue is not installed")
    conf = tmp_path / "slurm.conf"
    conf.write_text(UNREACHABLE_CONF)
    _slurm_run(store_root)
    env = {"SLURM_CONF": str(conf), "MLKIT_SLURM_TIMEOUT": "3s"}
    done = run_mlkit("runs", "list", "--csv", env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Slurm cannot be asked" in done.stderr and "Traceback" not in done.stderr
    bad = run_mlkit("runs", "list", "--csv", env={**env, "MLKIT_SLURM_TIMEOUT": "soon"}, timeout=60)
    assert bad.returncode == 2, bad.stderr
    assert "MLKIT_SLURM_TIMEOUT" in bad.stderr and "Traceback" not in bad.stderr


def test_following_with_slurm_unreachable_says_so(tmp_path, store_root):
    import subprocess

    from slurmtools import wait_until

    if shutil.which("squeue") is None:
        pytest.skip("squeue is not installed")
    conf = tmp_path / "slurm.conf"
    conf.write_text(UNREACHABLE_CONF)
    run_id = _slurm_run(store_root)
    err = tmp_path / "err.txt"
    env = {**os.environ, "SLURM_CONF": str(conf), "MLKIT_SLURM_TIMEOUT": "2"}
    with open(err, "wb") as fh:
        follow = subprocess.Popen([sys.executable, "-m", "mlkit", "runs", "logs", run_id, "--follow"],
                                  stdout=subprocess.DEVNULL, stderr=fh, env=env)  # fmt: skip
    try:
        wait_until(lambda: "Slurm cannot be asked" in err.read_text() or follow.poll() is not None, 60, 0.2)
    finally:
        follow.kill()
        follow.wait()
    assert "Slurm cannot be asked" in err.read_text()


def test_ctrl_c_while_sbatch_runs_leaves_no_scheduled_run(no_site, tmp_path, store_root):
    import signal
    import subprocess

    from slurmtools import wait_until

    from mlkit.tracking.store import FileStore

    fake = tmp_path / "bin"
    fake.mkdir()
    ready = tmp_path / "sbatch-started"
    (fake / "sbatch").write_text(f"#!/bin/sh\ntouch {ready}\nsleep 30\n")
    (fake / "sbatch").chmod(0o755)
    proj = tmp_path / "p"
    proj.mkdir()
    (proj / "MLproject").write_text(PROJECT)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    submit = subprocess.Popen([sys.executable, "-m", "mlkit", "run", str(proj), "--backend", "slurm"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)  # fmt: skip
    try:
        wait_until(lambda: ready.exists() or submit.poll() is not None, 60, 0.05)
        submit.send_signal(signal.SIGINT)
        _, err = submit.communicate(timeout=30)
    finally:
        if submit.poll() is None:
            submit.kill()
    assert submit.returncode == 130, err
    (run,) = FileStore(store_root).search_runs(["0"])[0]
    assert run.info.status == "KILLED"  # sbatch may have submitted: the run says it was interrupted
    assert run.data.tags["mlkit.failure_reason"] == "interrupted"


def test_a_job_scancel_no_longer_knows_is_skipped_not_an_error():
    """Slurm >= 23 answers a forgotten job id with an error and exit 1 (the test cluster's 22.05
    says nothing): that job is skipped, the others are still cancelled; other errors still raise."""
    from mlkit.backends.slurm.commands import scancel_unknown
    from mlkit.errors import LaunchError

    stderr = "scancel: error: Kill job error on job id 999999: Invalid job id specified\n"
    assert scancel_unknown(["999999", "12"], 1, stderr) == ["999999"]
    assert scancel_unknown(["12"], 0, "") == []
    already = "scancel: error: Kill job error on job id 12: Job/step already completing or completed\n"
    assert scancel_unknown(["12"], 1, already) == []
    with pytest.raises(LaunchError):
        scancel_unknown(["12"], 1, "scancel: error: Kill job error on job id 12: Access/permission denied\n")


def test_a_bare_switch_alone_is_a_switch_and_a_bare_value_key_is_refused(no_site):
    assert resolve_config("exclusive").sbatch_args() == ["--exclusive"]
    assert resolve_config("requeue,exclusive").requeue is True
    for text in ("qos", "partition=gpu,qos", "time"):
        with pytest.raises(UsageError) as exc:
            resolve_config(text)
        assert "needs a value" in exc.value.message and text.split(",")[-1] in exc.value.message
    with pytest.raises(UsageError) as exc:
        resolve_config('{"qos": true}')
    assert "qos needs a value" in exc.value.message


def test_a_signal_grace_not_shorter_than_the_time_limit_is_refused(no_site):
    from mlkit.backends.slurm.config import slurm_seconds

    assert [slurm_seconds(t) for t in ("5", "5:30", "01:00:00", "1-0", "1-02:03", "1-00:00:10", "UNLIMITED")] == [
        300, 330, 3600, 86400, 93780, 86410, None]  # fmt: skip
    for text in ("time=2", "time=90s", "time=10m,signal-grace=600", "time=00:01:00,signal-grace=61"):
        with pytest.raises(UsageError) as exc:
            resolve_config(text)
        assert "signal-grace" in exc.value.message and "\n" not in exc.value.message
    assert resolve_config("time=2,signal-grace=60").signal_grace == 60
    assert resolve_config("time=1,signal-grace=0").signal_grace == 0  # no signal: nothing to loop on


def test_mlkit_python_expands_the_home_directory(no_site):
    assert resolve_config("mlkit-python=~/venv/bin/python").python == str(Path.home() / "venv/bin/python")


def test_a_change_is_decided_again_when_the_run_ended_meanwhile(store_root):
    """Reconcile read the run RUNNING; the supervisor then recorded FAILED (exit_code) before the
    change was written: the run's own record stands, not Slurm's `slurm_failed` guess."""
    from mlkit.backends.slurm.status import JobView, _apply, interpret
    from mlkit.tracking.store import FileStore

    store = FileStore(store_root)
    run_id = store.create_run("0", tags={"mlkit.slurm.job_id": "5"}).info.run_id
    stale = store.get_run(run_id)
    store.set_tags(run_id, {"mlkit.failure_reason": "exit_code", "mlkit.exit_code": "3"})
    store.set_terminated(run_id, "FAILED")
    view = JobView("5", "FAILED", exit_code="3:0", source="sacct")
    assert _apply(store, stale, interpret(stale, view), view)
    run = store.get_run(run_id)
    assert (run.info.status, run.data.tags["mlkit.failure_reason"]) == ("FAILED", "exit_code")
    assert run.data.tags["mlkit.slurm.final"] == "1"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("requeue: maybe\n", "requeue"),
        ("signal-grace: -1\n", "signal-grace"),
        ("rdzv-port: 0\n", "rdzv-port"),
        ("exclusive: perhaps\n", "exclusive"),
        ("nice: -3\n", "nice"),
        ("time: 1\n", "signal-grace"),
        ("setup:\n  -\n  - echo x\n", "setup"),
        ("setup: {module: cuda}\n", "setup"),
    ],
)
def test_a_bad_value_in_the_site_file_names_the_file_not_the_flag(monkeypatch, tmp_path, text, key):
    """A bad `requeue:` in ~/.config/mlkit/slurm.yaml was reported as `--backend-config: requeue=...`
    (a flag the user never gave), and `setup: [null]` wrote a `None` line into the batch script."""
    site = tmp_path / "slurm.yaml"
    site.write_text(text)
    monkeypatch.setenv("MLKIT_SLURM_CONFIG", str(site))
    with pytest.raises(UsageError) as exc:
        resolve_config(None)
    assert str(site) in exc.value.message and key in exc.value.message
    assert "--backend-config" not in exc.value.message
    with pytest.raises(UsageError) as flag:
        resolve_config({"setup": [None]} if key == "setup" else {key: "-5"})
    assert flag.value.message.startswith("--backend-config") or key == "time"


def test_slurms_own_no_limit_forms_are_taken(no_site):
    """`time=UNLIMITED` (Slurm's keyword) was refused as `not a duration`, and `time=0` (Slurm's
    `no limit`) as a limit of 0 s shorter than signal-grace; sbatch takes both as no time limit."""
    for text in ("UNLIMITED", "infinite", "0", "00:00:00"):
        config = resolve_config({"time": text})
        assert config.options["time"] in ("UNLIMITED", text)
        assert config.signal_grace == 120
    assert resolve_config({"time": "infinite"}).sbatch_args() == ["--time=UNLIMITED"]


def test_a_huge_value_gives_a_short_error(no_site, tmp_path):
    """A 900 KB `partition` in a --backend-config JSON file came back whole in the error line."""
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"partition": "a b" * 300_000}))
    for given in (str(path), {"x" * 100_000: 1}, {"requeue": "?" * 100_000}, {"setup": [1] * 100_000}):
        with pytest.raises(UsageError) as exc:
            resolve_config(given)
        assert len(exc.value.message) < 400, exc.value.message[:100]


def test_cancel_of_a_slurm_submission_whose_job_is_unknown_says_so(store_root):
    """A submission killed while sbatch ran, whose job Slurm does not hold (never submitted, or
    forgotten): `runs cancel` called it `not a Slurm run`, though it was submitted with --backend slurm."""
    from mlkit.tracking.store import FileStore

    tags = {"mlflow.project.backend": "slurm"}
    run = FileStore(store_root).create_run("0", status="SCHEDULED", tags=tags)
    done = run_mlkit("runs", "cancel", run.info.run_id)
    assert done.returncode == 2 and "not a Slurm run" not in done.stderr
    assert "job id was never recorded" in done.stderr and done.stderr.count("\n") <= 2, done.stderr
