"""Fixtures for the `container` tests: podman and docker set up once per session with a local base
image (no registry), the engine of each test chosen by parameter, tiny docker_env projects."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import run_mlkit

sys.path.insert(0, str(Path(__file__).parent))  # so test modules can import ctr_support
from ctr_support import BASE_TAG, Dockerd, base_rootfs_tar, import_image, podman_env, podman_stop  # noqa: E402

ENGINES = ("podman", "docker")
# No GPU probe, no sampler thread: each container test stays short.
FAST = ("--gpus", "none", "--system-metrics-interval", "0")


def missing(why: str) -> None:
    """Skip for a missing engine here; in CI the engines are installed, so it is a failure there."""
    if os.environ.get("CI"):
        pytest.fail(f"container engine unavailable in CI: {why}")
    pytest.skip(why)


@pytest.fixture(scope="session")
def container_engines() -> Iterator[dict[str, dict[str, str] | str]]:
    """{engine: the variables that reach it, or why it is not available}. Starts dockerd on
    private paths and imports the base image into both engines; cleans up after the session."""
    # the base image is made from this host's files: without them no engine can run a test (a GPU
    # machine with no busybox, say), which `engine` reports as a skip here and a failure in CI
    absent = [p for p in ("/bin/busybox", "/usr/bin/python3.11") if not os.path.exists(p)]
    if absent:
        yield {e: f"the local base image needs {' and '.join(absent)} (Debian: busybox-static python3.11)"
               for e in ENGINES}  # fmt: skip
        return
    work = Path(tempfile.mkdtemp(prefix="mlkit-ctr-", dir="/tmp"))  # short: docker.sock path limit
    found: dict[str, dict[str, str] | str] = {}
    dockerd = Dockerd(work)
    try:
        tar = base_rootfs_tar(work / "base.tar")
        env = podman_env(work)
        if env is None:
            found["podman"] = "podman or runc is not installed (Debian: podman runc catatonit)"
        else:
            try:
                import_image("podman", {**os.environ, **env}, tar)
                found["podman"] = env
            except subprocess.CalledProcessError as exc:
                found["podman"] = f"podman import failed: {exc.stderr!r}"
        why = dockerd.start()
        if why is None:
            import_image("docker", {**os.environ, **dockerd.env}, tar)
            found["docker"] = dockerd.env
        else:
            found["docker"] = why
        (work / "base.tar").unlink()
        yield found
    finally:
        podman = found.get("podman")
        if isinstance(podman, dict):
            podman_stop({**os.environ, **podman}, work)
        dockerd.stop()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, container_engines, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test runs once with podman and once with docker (its variables set for mlkit)."""
    name: str = request.param
    env = container_engines[name]
    if isinstance(env, str):
        missing(env)
    assert isinstance(env, dict)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLKIT_KILL_GRACE", "1")
    return name


@pytest.fixture
def project(tmp_path: Path) -> Callable[..., Path]:
    """A docker_env project on disk: `docker_env` lines (YAML, under the key) and files."""

    def make(docker_env: str, entry: str, files: dict[str, str], name: str = "proj") -> Path:
        root = tmp_path / name
        root.mkdir(parents=True, exist_ok=True)
        (root / "MLproject").write_text(
            f"name: {name}\ndocker_env:\n  image: {BASE_TAG}\n"
            + textwrap.indent(textwrap.dedent(docker_env).strip("\n"), "  ")
            + "\nentry_points:\n"
            + textwrap.indent(textwrap.dedent(entry).strip("\n"), "  ")
            + "\n"
        )
        for rel, text in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(textwrap.dedent(text).lstrip("\n"))
        return root

    return make


@pytest.fixture
def ctr_run(tmp_path: Path, engine: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`mlkit run <args> --container-engine <engine> --gpus none ...` in tmp_path."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120):
        return run_mlkit(
            "run", *FAST, "--container-engine", engine, *args, cwd=tmp_path, env=env, timeout=timeout
        )

    return run


@pytest.fixture
def start_ctr(tmp_path: Path, engine: str) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start `mlkit run ... --container-engine <engine>` in the background; killed at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> subprocess.Popen[bytes]:
        err = open(tmp_path / f"sup{len(started)}.err", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlkit", "run", *FAST, "--container-engine", engine, *args],
            cwd=tmp_path, stdout=err, stderr=err,
        )  # fmt: skip
        proc.err_path = Path(err.name)  # type: ignore[attr-defined]
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
