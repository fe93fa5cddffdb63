"""Fixtures for the supervisor tests: tiny projects on disk, `mlkit run` as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import run_mlkit

# Flags that keep a test run fast and independent of this machine: no env build, no GPU probe,
# no sampler thread.
FAST = ("--env-manager", "local", "--gpus", "none", "--system-metrics-interval", "0")


@pytest.fixture
def make_project(tmp_path: Path) -> Callable[..., Path]:
    """Write files (dedented) into a fresh project directory and return it."""

    def make(files: dict[str, str], name: str = "proj") -> Path:
        root = tmp_path / name
        root.mkdir(parents=True, exist_ok=True)
        for rel, text in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text).lstrip("\n"))
        return root

    return make


@pytest.fixture
def mlkit_run(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`python -m mlkit run <args> --env-manager local --gpus none ...` in tmp_path."""

    def run(*args: str, fast: bool = True, env: dict[str, str] | None = None, timeout: float = 60):
        extra = FAST if fast else ()
        return run_mlkit("run", *extra, *args, cwd=tmp_path, env=env, timeout=timeout)

    return run


@pytest.fixture
def start_mlkit(tmp_path: Path):
    """Start `python -m mlkit run ...` in the background (stdout/stderr to files); yields a starter."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        out = open(tmp_path / f"sup{len(started)}.out", "wb")  # noqa: SIM115 - closed with the process
        err = open(tmp_path / f"sup{len(started)}.err", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlkit", "run", *FAST, *args],
            cwd=tmp_path,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=err,
        )
        proc.out_path = Path(out.name)  # type: ignore[attr-defined]
        proc.err_path = Path(err.name)  # type: ignore[attr-defined]
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def store(store_root: Path):
    from mlkit.tracking.store import FileStore

    return FileStore(store_root)


@pytest.fixture
def only_run(store_root: Path) -> Callable[..., object]:
    """The single run of an experiment (read fresh from disk each call)."""

    def get(experiment_id: str = "0"):
        from mlkit.tracking.store import FileStore

        runs, _ = FileStore(store_root).search_runs([experiment_id])
        assert len(runs) == 1, [r.info.run_id for r in runs]
        return runs[0]

    return get


@pytest.fixture
def wait_for() -> Callable[..., None]:
    """Poll `predicate` every 50 ms until true; fail after `timeout` s."""

    def wait(predicate: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    return wait
