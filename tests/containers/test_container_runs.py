"""docker_env projects in real containers, each test once with podman and once with docker."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ctr_support import FAKE_UUIDS, MLKIT_IN_IMAGE, containers, fake_cdi_spec, only_run, wait_for

from helpers import run_mlkit

pytestmark = pytest.mark.container

MAIN = """
main:
  parameters:
    code: {type: int, default: 0}
  command: "python train.py --code {code}"
"""


def test_logs_through_mlkit_and_mlflow_into_one_run(engine, project, ctr_run, store_root, tmp_path):
    proj = project(
        MLKIT_IN_IMAGE,
        MAIN,
        {
            "train.py": """
                import os, sys
                print("first line", flush=True)
                import mlkit
                mlkit.log_param("by_mlkit", "yes")
                mlkit.log_metric("m_mlkit", 1.5, step=1)
                import mlflow
                with mlflow.start_run():  # attaches to MLFLOW_RUN_ID: the run mlkit made
                    mlflow.log_param("by_mlflow", "yes")
                    mlflow.log_metric("m_mlflow", 2.5)
                print("uid", os.getuid(), "cwd", os.getcwd())
            """
        },
    )
    done = ctr_run(str(proj))
    assert done.returncode == 0, done.stderr
    run = only_run(store_root)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"code": "0", "by_mlkit": "yes", "by_mlflow": "yes"}
    assert run.data.metrics == {"m_mlkit": 1.5, "m_mlflow": 2.5}
    tags = run.data.tags
    assert tags["mlkit.container_engine"] == engine
    assert tags["mlkit.env_manager"] == "docker" and tags["mlflow.project.env"] == "docker"
    assert tags["mlflow.docker.image.uri"] == "localhost/mlkit-test-base:py3"
    assert (
        tags["mlflow.docker.image.id"].removeprefix("sha256:")[:12]
        in subprocess.run(
            [engine, "images", "--no-trunc", "--format", "{{.ID}}"], capture_output=True, text=True
        ).stdout
    )
    assert json.loads(tags["mlkit.command"])[:2] == [engine, "run"]
    # output.log from the first byte; the entry point ran as the caller, in MLflow's directory
    log = (Path(run.info.artifact_uri.removeprefix("file://")) / "logs" / "output.log").read_text()
    assert log.startswith("first line\n")
    assert f"uid {os.getuid()} cwd /mlflow/projects/code" in log
    # every file the container wrote into the store belongs to the caller
    run_dir = store_root / "0" / run.info.run_id
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in run_dir.rglob("*")}
    assert owners == {(os.getuid(), os.getgid())}
    assert containers(engine, run.info.run_id) == []  # --rm


def test_volumes_and_both_environment_forms(engine, project, ctr_run, store_root, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "input.txt").write_text("from the host volume")
    proj = project(
        f"""
        volumes: ["{data}:/data"]
        environment: [["GIVEN", "in the MLproject"], "COPIED"]
        """,
        MAIN,
        {
            "train.py": """
                import os
                print(open("/data/input.txt").read(), "|", os.environ["GIVEN"], "|", os.environ["COPIED"])
                open("/data/out.txt", "w").write("written inside")
            """
        },
    )
    done = ctr_run(str(proj), env={"COPIED": "from this shell"})
    assert done.returncode == 0, done.stderr
    assert "from the host volume | in the MLproject | from this shell" in done.stdout
    assert (data / "out.txt").read_text() == "written inside"
    assert (data / "out.txt").stat().st_uid == os.getuid()
    # the copied value (a secret, say) is read by the engine from its own environment: it is in
    # neither the engine's argv (`ps`) nor the command the run records
    tags = only_run(store_root).data.tags
    assert "COPIED" in tags["mlkit.command"] and "from this shell" not in json.dumps(tags)

    # a copied variable that is not set: refused before anything exists, as MLflow refuses it
    env = {k: v for k, v in os.environ.items() if k != "COPIED"}
    refused = subprocess.run(
        [sys.executable, "-m", "mlkit", "run", "--gpus", "none", "--container-engine", engine, str(proj)],
        cwd=tmp_path, env={**env, "MLKIT_TRACKING_URI": str(tmp_path / "other")}, capture_output=True, text=True,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "COPIED is to be copied from this environment, but it is not set" in refused.stderr
    assert not (tmp_path / "other").exists()


def test_build_image_copies_the_project_and_is_built_once(engine, project, ctr_run, store_root):
    proj = project(
        "",
        MAIN,
        {"train.py": 'import os\nopen("made-inside.txt", "w").write("x")\nprint(sorted(os.listdir(".")))\n'},
    )
    # a build SIGKILLed before it could clean up left its context (a copy of a project) behind;
    # one of a build still running (this process) is left alone
    from mlkit.env import cache

    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    dead = cache.env_root() / f".build-{dead_pid}-abc"
    live = cache.env_root() / f".build-{os.getpid()}-def"
    for context in (dead, live):
        (context / "code").mkdir(parents=True)
        (context / "code" / "big.bin").write_bytes(b"x" * 1024)
    first = ctr_run(str(proj), "--build-image")
    assert first.returncode == 0, first.stderr
    assert not dead.exists() and live.exists()
    assert "['MLproject', 'made-inside.txt', 'train.py']" in first.stdout
    assert not (proj / "made-inside.txt").exists()  # a copy in the image, not the directory itself
    second = ctr_run(str(proj), "--build-image")
    assert second.returncode == 0, second.stderr
    from mlkit.tracking.store import FileStore

    runs, _ = FileStore(store_root).search_runs(["0"], order_by=["attributes.start_time ASC"])
    built = [r.data.tags["mlkit.container_image_built"] for r in runs]
    uris = {r.data.tags["mlflow.docker.image.uri"] for r in runs}
    assert built == ["true", "false"] and len(uris) == 1
    assert uris.pop().startswith("localhost/mlkit-proj:")
    (proj / "train.py").write_text('print("changed")\n')
    third = ctr_run(str(proj), "--build-image")
    assert "changed" in third.stdout
    runs, _ = FileStore(store_root).search_runs(["0"], order_by=["attributes.start_time DESC"])
    assert runs[0].data.tags["mlkit.container_image_built"] == "true"
    assert runs[0].data.tags["mlflow.docker.image.uri"] != runs[1].data.tags["mlflow.docker.image.uri"]


@pytest.mark.parametrize(
    ("code", "status", "reason"),
    [(0, "FINISHED", None), (3, "FAILED", "exit_code"), (137, "KILLED", "signal")],
)
def test_exit_codes_pass_through(engine, project, ctr_run, store_root, code, status, reason):
    proj = project(
        "",
        MAIN,
        {
            "train.py": """
                import os, signal, sys
                code = int(sys.argv[-1])
                if code == 137:
                    os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer does
                sys.exit(code)
            """
        },
    )
    done = ctr_run(str(proj), "-P", f"code={code}")
    assert done.returncode == code, done.stderr
    run = only_run(store_root)
    assert run.info.status == status
    assert run.data.tags.get("mlkit.failure_reason") == reason
    if code == 137:
        assert run.data.tags["mlkit.signal"] == "SIGKILL"


SLEEPER = {
    "train.py": """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only `stop`'s SIGKILL ends it
        print("ready", flush=True)
        time.sleep(120)
    """
}


def _started(store_root: Path, proc: subprocess.Popen[bytes]) -> str:
    """The run id once its entry point printed "ready" in the container."""

    def ready() -> bool:
        assert proc.poll() is None, proc.err_path.read_text()  # type: ignore[attr-defined]
        for log in store_root.glob("0/*/artifacts/logs/output.log"):
            if "ready" in log.read_text():
                return True
        return False

    wait_for(ready, what="the entry point to start")
    return only_run(store_root).info.run_id


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_stop_the_container(engine, project, start_ctr, store_root, sig):
    proc = start_ctr(str(project("", MAIN, SLEEPER)))
    run_id = _started(store_root, proc)
    assert containers(engine, run_id) == [f"mlkit-{run_id}"]
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == 128 + sig
    assert containers(engine, run_id) == []
    run = only_run(store_root)
    assert (run.info.status, run.data.tags["mlkit.failure_reason"]) == ("KILLED", "signal")


def test_timeout_stops_the_container(engine, project, start_ctr, store_root):
    proc = start_ctr(str(project("", MAIN, SLEEPER)), "--timeout", "4s")
    run_id = _started(store_root, proc)
    assert proc.wait(timeout=60) == 124
    assert containers(engine, run_id) == []
    run = only_run(store_root)
    assert (run.info.status, run.data.tags["mlkit.failure_reason"]) == ("KILLED", "timeout")


def test_a_killed_supervisor_leaves_a_container_the_next_command_stops(
    engine, project, start_ctr, store_root
):
    proc = start_ctr(str(project("", MAIN, SLEEPER)))
    run_id = _started(store_root, proc)
    proc.kill()
    proc.wait()
    time.sleep(0.5)
    assert containers(engine, run_id) == [f"mlkit-{run_id}"]  # the engine keeps it running
    listed = run_mlkit("runs", "list")  # any command that marks lost runs
    assert listed.returncode == 0, listed.stderr
    assert containers(engine, run_id) == []
    run = only_run(store_root)
    assert (run.info.status, run.data.tags["mlkit.failure_reason"]) == ("FAILED", "lost")


def test_a_killed_supervisors_container_keeps_its_gpus_until_it_is_gone(
    engine, project, start_ctr, store_root, monkeypatch
):
    """A SIGKILLed supervisor's container runs on, on the run's GPUs: the lease holds while it
    does (the ledger knows the run by its processes in the container), so no other run is given
    those GPUs; once the next command has removed the container, they are free. podman only: docker
    here cannot pass GPUs in (no NVIDIA Container Toolkit)."""
    if engine == "docker" or os.geteuid() != 0:
        pytest.skip("needs podman and root (a CDI spec in /var/run/cdi)")
    from mlkit.gpu.ledger import read_leases

    monkeypatch.setenv("MLKIT_FAKE_NVML", "four_idle")
    with fake_cdi_spec():
        proc = start_ctr("--gpus", "2", "--nproc-per-node", "1", str(project("", MAIN, SLEEPER)))
        run_id = _started(store_root, proc)
        assert {lease.run_id for lease in read_leases()} == {run_id}
        proc.kill()
        proc.wait()
        assert containers(engine, run_id) == [f"mlkit-{run_id}"]  # the engine keeps it running
        leases = read_leases()
        assert [lease.run_id for lease in leases] == [run_id, run_id]  # still its GPUs
        listed = run_mlkit("runs", "list")  # marks the run lost and removes its container
        assert listed.returncode == 0, listed.stderr
        assert containers(engine, run_id) == []
        assert read_leases() == []


# `python -m torch.distributed.run` finds this package first (the project is the working directory)
FAKE_TORCHRUN = {
    "torch/__init__.py": "",
    "torch/distributed/__init__.py": "",
    "torch/distributed/run.py": """
        import os, sys, time
        rank = sys.argv[sys.argv.index("--node-rank") + 1]
        print("ready", rank, flush=True)
        if rank == "0":  # node 0 runs until node 1 has run beside it
            while not os.path.exists("node1-ran"):
                time.sleep(0.1)
        else:
            open("node1-ran", "w").close()
    """,
    "t.py": "",
}


def test_two_nodes_of_one_run_on_one_host_get_a_container_each(
    engine, project, start_ctr, ctr_run, store_root
):
    """`--node-rank 1 --run-id RUN` beside node 0 on the same host: each node's container has a
    name of its own (node 1's was refused: the name mlkit-<run id> was node 0's)."""
    proj = str(project("", 'main:\n  command: "python t.py"', FAKE_TORCHRUN))
    nodes = ("--nnodes", "2", "--rdzv-endpoint", "127.0.0.1:29400")
    first = start_ctr(*nodes, "--node-rank", "0", proj)
    run_id = _started(store_root, first)
    second = ctr_run(*nodes, "--node-rank", "1", "--run-id", run_id, proj)
    assert second.returncode == 0, second.stderr
    assert f"--name mlkit-{run_id}-node1 " in second.stderr
    assert first.wait(timeout=60) == 0
    run = only_run(store_root)
    assert run.info.status == "FINISHED"
    assert containers(engine, run_id) == []


def test_auto_picks_the_engine_that_answers_and_says_so(engine, project, store_root, tmp_path, monkeypatch):
    if engine == "docker":
        monkeypatch.setenv("PATH", _path_without("podman"))
    else:  # a docker CLI whose daemon is down: auto goes on to podman
        monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-daemon.sock")
    done = run_mlkit("run", "--gpus", "none", "--system-metrics-interval", "0", str(project("", MAIN, {
        "train.py": "print('hi')\n"})), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert only_run(store_root).data.tags["mlkit.container_engine"] == engine


def _path_without(program: str) -> str:
    """PATH without the directories that hold `program`."""
    keep = [
        e for e in os.environ["PATH"].split(os.pathsep) if e and not os.path.exists(os.path.join(e, program))
    ]
    return os.pathsep.join(keep)


GPU_MAIN = """
main:
  command: "python gpus.py"
"""
GPU_FILES = {
    "gpus.py": """
        import os
        print("devices", sorted(d for d in os.listdir("/dev") if d.startswith("nvidia")))
        print("cvd", os.environ.get("CUDA_VISIBLE_DEVICES"))
    """
}


def test_the_leased_gpus_and_only_those_are_passed_in(engine, project, store_root, tmp_path, monkeypatch):
    """Fake NVML leases two of four GPUs. podman: a CDI spec naming the four by UUID (fake device
    nodes) shows exactly the leased two inside. docker here has no NVIDIA Container Toolkit: the
    run fails with one line that says so (exit 73, env_build_failed)."""
    monkeypatch.setenv("MLKIT_FAKE_NVML", "four_idle")
    if engine == "podman" and os.geteuid() != 0:
        pytest.skip("writing a CDI spec in /var/run/cdi needs root")
    with fake_cdi_spec() if engine == "podman" else contextlib.nullcontext():
        done = run_mlkit("run", "--gpus", "2", "--nproc-per-node", "1", "--system-metrics-interval", "0",
                         "--container-engine", engine,
                         str(project("", GPU_MAIN, GPU_FILES)), cwd=tmp_path)  # fmt: skip
    run = only_run(store_root)
    if engine == "docker":
        assert done.returncode == 73
        assert [ln for ln in done.stderr.splitlines() if ln.startswith("Error: ")] == [
            "Error: docker cannot pass GPUs into containers: the NVIDIA Container Toolkit is not installed "
            "(no nvidia runtime, no nvidia-container-cli)"
        ]
        assert (run.info.status, run.data.tags["mlkit.failure_reason"]) == ("FAILED", "env_build_failed")
        return
    assert done.returncode == 0, done.stderr
    leased = json.loads(run.data.tags["mlkit.command"])
    uuids = [a.split("=", 1)[1] for a in leased if a.startswith("nvidia.com/gpu=")]
    assert len(uuids) == 2 and set(uuids) <= set(FAKE_UUIDS)
    expected = sorted(f"nvidia{FAKE_UUIDS.index(u)}" for u in uuids)
    assert f"devices {expected}" in done.stdout
    assert f"cvd {','.join(uuids)}" in done.stdout


@pytest.mark.gpu
def test_a_real_gpu_is_passed_by_uuid(engine, project, store_root, tmp_path, monkeypatch):
    """On a GPU machine whose engine has the NVIDIA Container Toolkit: `nvidia-smi -L` inside (the
    toolkit mounts it) lists exactly the leased GPU."""
    monkeypatch.delenv("MLKIT_FAKE_NVML", raising=False)
    from mlkit.env.container import find_engine
    from mlkit.gpu import probe

    if not probe().gpus:
        pytest.skip("no NVIDIA GPU here")
    if find_engine(engine).gpu_problem:
        pytest.skip(f"{engine} has no NVIDIA Container Toolkit here")
    done = run_mlkit("run", "--gpus", "1", "--system-metrics-interval", "0", "--container-engine", engine,
                     str(project("", 'main:\n  command: "nvidia-smi -L"', {})), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    leased = only_run(store_root).data.tags["mlkit.command"]
    listed = [line for line in done.stdout.splitlines() if line.startswith("GPU ")]
    assert len(listed) == 1 and listed[0].split("UUID: ")[1].rstrip(")") in leased
