"""Fixtures for the inspect tests (gc, compare, report): real stores and real processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # so test modules can import inspect_support

from inspect_support import SweepStore, build_sweep  # noqa: E402


@pytest.fixture
def sweep(store_root: Path, tmp_path: Path) -> SweepStore:
    return build_sweep(store_root, tmp_path)


@pytest.fixture
def sleeper():
    """A real live process (its pid owns the 'live' run and the GPU lease in the gc tests)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid
