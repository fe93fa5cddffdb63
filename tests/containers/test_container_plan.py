"""The engine argv (pure: GPUs from a lease, mounts, variables, --docker-args), and the refusals made
before a docker_env run exists (no engine, daemon down, bad flags): exit codes, nothing created."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mlkit.env.container import CODE_DIR, ContainerEnv, engine_argv, parse_docker_args
from mlkit.errors import EnvBuildError, UsageError

from helpers import run_mlkit

pytestmark = pytest.mark.container

A, B = "GPU-aaaaaaaa-0000-0000-0000-000000000001", "GPU-bbbbbbbb-0000-0000-0000-000000000002"


def _env(engine: str, **kw) -> ContainerEnv:
    return ContainerEnv(engine=engine, image="img:1", image_id="sha256:1", project_dir=Path("/p"),
                        mount_code=True, **{"user": "1000:1000", **kw})  # fmt: skip


def _argv(env: ContainerEnv, uuids=(), variables=None) -> list[str]:
    return engine_argv(env, ["python", "t.py"], variables or {"MLKIT_RUN_ID": "r1", "GONE": None},
                       run_id="r1", mounts=[Path("/s/mlruns")], gpu_uuids=uuids)  # fmt: skip


def test_docker_gets_exactly_the_leased_gpus_by_uuid():
    argv = _argv(_env("docker"), [A, B])
    i = argv.index("--gpus")
    assert argv[i + 1] == f'"device={A},{B}"'  # docker reads --gpus as CSV: the quotes keep both
    assert argv[:6] == ["docker", "run", "--rm", "--init", "--name", "mlkit-r1"]
    assert argv[-3:] == ["img:1", "python", "t.py"]


def test_podman_gets_one_cdi_device_per_leased_gpu():
    argv = _argv(_env("podman", cdi_devices=frozenset({A, B, "0", "1"})), [A, B])
    devices = [argv[i + 1] for i, a in enumerate(argv) if a == "--device"]
    assert devices == [f"nvidia.com/gpu={A}", f"nvidia.com/gpu={B}"]
    assert "--gpus" not in argv  # a no-op in podman 4


def test_no_gpus_no_gpu_flags_and_a_missing_toolkit_is_one_line():
    assert "--gpus" not in _argv(_env("docker", gpu_problem="no toolkit"))  # --gpus none: fine
    with pytest.raises(EnvBuildError, match="no toolkit") as err:
        _argv(_env("docker", gpu_problem="no toolkit"), [A])
    assert "\n" not in err.value.message and "--gpus none" in (err.value.hint or "")
    with pytest.raises(EnvBuildError, match=f"name no nvidia.com/gpu device {A}"):
        _argv(_env("podman", cdi_devices=frozenset({"0"})), [A])


def test_mounts_user_workdir_and_variables():
    env = _env("docker", volumes=("/data:/data",), environment=(("A", "1"), ("MLKIT_RUN_ID", "mine")))
    argv = _argv(env)
    pairs = list(zip(argv, argv[1:], strict=False))
    assert ("--user", "1000:1000") in pairs and ("-w", CODE_DIR) in pairs
    assert ("-v", "/s/mlruns:/s/mlruns") in pairs and ("-v", f"/p:{CODE_DIR}") in pairs
    assert ("-v", "/data:/data") in pairs
    assert ("-e", "A=1") in pairs and ("-e", "MLKIT_RUN_ID=mine") in pairs  # the project's entry wins
    assert not any(a.startswith("GONE") for a in argv)


def test_no_gpu_leased_means_none_visible_and_copied_variables_stay_out_of_the_argv():
    env = _env("docker", environment=(("GIVEN", "1"), ("SECRET", None)))
    argv = _argv(env)
    pairs = list(zip(argv, argv[1:], strict=False))
    assert ("-e", "NVIDIA_VISIBLE_DEVICES=void") in pairs  # the nvidia runtime shows no GPU
    assert ("-e", "SECRET") in pairs and ("-e", "GIVEN=1") in pairs  # the engine copies SECRET itself
    assert "NVIDIA_VISIBLE_DEVICES=void" not in _argv(_env("docker"), [A])


def test_a_user_the_image_does_not_know_gets_home_tmp_unless_someone_chose_a_home():
    """mlkit runs the container as the caller's uid, which the image's passwd does not know: the
    engine would set HOME=/ (not writable). HOME=/tmp then, unless root runs it, the image's
    config sets HOME, the project's environment does, or --docker-args may (env=HOME=..., an env file)."""

    def home(**kw) -> list[str]:
        argv = _argv(_env("docker", **kw))
        return [
            b
            for a, b in zip(argv, argv[1:], strict=False)
            if a in ("-e", "--env") and b.split("=")[0] == "HOME"
        ]

    assert home() == ["HOME=/tmp"]
    assert home(user="0:0") == []  # root: the image's /etc/passwd has root's home
    assert home(user=None) == []  # --docker-args user=...: the user chose who runs it
    assert home(image_home=True) == []  # ENV HOME=... in the image
    assert home(environment=(("HOME", "/work"),)) == ["HOME=/work"]
    assert home(environment=(("HOME", None),)) == ["HOME"]  # copied from this environment by the engine
    assert home(extra_args=parse_docker_args(["env=HOME=/x"])) == ["HOME=/x"]  # the user's own only
    assert home(extra_args=parse_docker_args(["e=HOME"])) == ["HOME"]
    assert home(extra_args=parse_docker_args(["env-file=/f"])) == []  # it may set HOME: left to it
    assert home(extra_args=parse_docker_args(["env=OTHER=1", "shm-size=1g"])) == ["HOME=/tmp"]


def test_an_images_own_home_is_read_from_its_config(monkeypatch):
    """One `image inspect` gives the id and the config's environment: ENV HOME=... is respected."""
    from mlkit.env import container as ctr

    answers = {"with": "sha256:a\nPATH=/usr/bin\nHOME=/home/app\n", "without": "sha256:b\nPATH=/usr/bin\n",
               "homeless": "sha256:c\nNOTHOME=/x\n"}  # fmt: skip
    monkeypatch.setattr(ctr, "_answer", lambda argv: (0, answers[argv[-1]]))
    assert ctr._image_facts("docker", "with") == ("sha256:a", True)
    assert ctr._image_facts("docker", "without") == ("sha256:b", False)
    assert ctr._image_facts("docker", "homeless") == ("sha256:c", False)
    assert ctr._image_facts("podman", "with") == ("sha256:a", True)  # the same call for podman
    monkeypatch.setattr(ctr, "_answer", lambda argv: (125, "Error: no such image"))
    assert ctr._image_facts("docker", "gone") is None


def test_derived_tag_is_a_valid_reference_for_any_project_name():
    import re

    from mlkit.env.container import ContainerRequest, Engine

    for name in ("My..Project_", "a._b", "x" * 59 + "-y", "日本"):
        tag = ContainerRequest(Engine("docker"), "img", Path("/p"), name, code_hash="h").derived_tag
        repo = tag.split(":")[0].split("/", 1)[1]
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", repo), tag


def test_build_image_skips_fifos_and_an_unreadable_file_is_one_line(tmp_path):
    import os

    from mlkit.env.container import code_files, code_hash

    (tmp_path / "train.py").write_text("print(1)")
    os.mkfifo(tmp_path / "pipe")
    assert code_files(tmp_path) == ["train.py"]  # a FIFO would block the hash and the copy
    with pytest.raises(EnvBuildError, match="cannot read"):
        code_hash(tmp_path, ["train.py", "missing.py"])


def test_docker_args_follow_mlflow():
    assert parse_docker_args(["shm-size=8g", "ipc=host", "privileged", "u=0"]) == (
        "--shm-size", "8g", "--ipc", "host", "--privileged", "-u", "0",
    )  # fmt: skip
    with pytest.raises(UsageError, match="given twice"):
        parse_docker_args(["ipc=host", "ipc=private"])
    with pytest.raises(UsageError, match="expected NAME=VALUE"):
        parse_docker_args(["--ipc=host"])


@dataclass
class _Gpu:
    uuid: str


@dataclass
class _Lease:
    gpus: list = field(default_factory=list)
    env: dict = field(default_factory=dict)


def test_plan_run_wraps_the_command_in_the_engine_argv(tmp_path):
    from mlkit.env.container import ContainerRequest, Engine
    from mlkit.env.manager import container_env
    from mlkit.project import load_project
    from mlkit.runner.plan import plan_run

    (tmp_path / "MLproject").write_text(
        "name: p\ndocker_env: {image: img:1}\nentry_points:\n  main:\n    command: 'python t.py && echo done'\n"
    )
    project = load_project(tmp_path, "main")
    request = ContainerRequest(engine=Engine("docker"), image="img:1", project_dir=tmp_path, project_name="p")
    env = container_env(request, "img:1", "sha256:1", built=False)
    lease = _Lease([_Gpu(A)], {"CUDA_VISIBLE_DEVICES": A})
    plan = plan_run(project, "main", {}, env=env, lease=lease, store_root=tmp_path / "mlruns",
                    run_id="r1", experiment_id="0")  # fmt: skip
    assert plan.argv[-4:] == ["img:1", "sh", "-c", "python t.py && echo done"]  # sh: images need no bash
    assert f'"device={A}"' in plan.argv and f"CUDA_VISIBLE_DEVICES={A}" in plan.argv
    assert (plan.container_engine, plan.container_name, plan.env_manager) == ("docker", "mlkit-r1", "docker")


# ------------------------------------------------------------------------------ refusals (real CLI)
PROJECT = """
name: p
docker_env:
  image: localhost/mlkit-test-base:py3
entry_points:
  main:
    command: "python -c 'print(1)'"
"""


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "MLproject").write_text(PROJECT)
    return root


def _nothing_created(tmp_path: Path) -> None:
    assert not (tmp_path / "mlruns").exists()
    assert not (tmp_path / "envs").exists()


def test_no_engine_installed_exits_73_and_creates_nothing(proj, tmp_path):
    done = run_mlkit("run", str(proj), "--container-engine", "podman", cwd=tmp_path,
                     env={"PATH": str(tmp_path / "empty")})  # fmt: skip
    assert done.returncode == 73
    assert (
        done.stderr.splitlines()[0] == "Error: docker_env needs a container engine: podman is not installed"
    )
    assert "hint: install podman" in done.stderr
    _nothing_created(tmp_path)


@pytest.mark.skipif(not shutil.which("docker"), reason="needs the docker CLI")
def test_docker_daemon_down_exits_73_and_creates_nothing(proj, tmp_path):
    done = run_mlkit("run", str(proj), "--container-engine", "docker", cwd=tmp_path,
                     env={"DOCKER_HOST": f"unix://{tmp_path}/nothing.sock"})  # fmt: skip
    assert done.returncode == 73
    first = done.stderr.splitlines()[0]
    assert first.startswith("Error: docker_env needs a container engine: the docker daemon does not answer")
    assert "DOCKER_HOST" in done.stderr
    _nothing_created(tmp_path)


def test_dry_run_shows_the_image_and_the_whole_engine_argv(proj, tmp_path):
    done = run_mlkit("run", str(proj), "--dry-run", "--json", "--container-engine", "podman",
                     "-A", "shm-size=64m", "--build-image", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["container"]["engine"] == "podman"
    assert doc["container"]["image"].startswith("localhost/mlkit-p:")  # the --build-image tag
    argv = doc["argv"]
    assert argv[:2] == ["podman", "run"] and argv[-4:] == [
        doc["container"]["image"],
        "python",
        "-c",
        "print(1)",
    ]
    assert ["--shm-size", "64m"] == argv[argv.index("--shm-size") : argv.index("--shm-size") + 2]
    assert f"{tmp_path / 'mlruns'}:{tmp_path / 'mlruns'}" in argv
    _nothing_created(tmp_path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--docker-args", "ipc=host", "-A", "ipc=private"], "--docker-args ipc: given twice"),
        (["--container-engine", "lxc"], "--container-engine 'lxc': unknown engine"),
        (["--env-manager", "uv"], "--env-manager uv: a docker_env project runs in its container"),
        (["-A", "name=mine"], "--docker-args name: mlkit names the container"),
        (["-A", "d"], "--docker-args d: the run is the container's life"),
        (["-A", "gpus=all"], "--docker-args gpus: the run's GPUs come from its lease"),
        (["--store", "/tmp/a:b/mlruns"], "a path with ':' cannot be mounted into a container"),
    ],
)
def test_bad_container_flags_exit_2_and_create_nothing(proj, tmp_path, args, message):
    done = run_mlkit("run", str(proj), *args, cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr.splitlines()[0]
    _nothing_created(tmp_path)


def test_container_flags_without_docker_env_are_refused(tmp_path):
    root = tmp_path / "plain"
    root.mkdir()
    (root / "MLproject").write_text("entry_points:\n  main:\n    command: 'python -c 1'\n")
    done = run_mlkit("run", str(root), "--build-image", cwd=tmp_path)
    assert done.returncode == 2 and "--build-image: the project has no docker_env" in done.stderr
    _nothing_created(tmp_path)
