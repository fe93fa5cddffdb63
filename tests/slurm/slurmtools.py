"""Small helpers the Slurm tests share (a module of its own: `conftest` is ambiguous on the path)."""

from __future__ import annotations

import subprocess
import time


def sh(*argv: str, check: bool = True) -> str:
    out = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    if check and out.returncode != 0:
        raise AssertionError(f"{argv}: {out.stderr}")
    return out.stdout


def wait_until(check, timeout: float = 60, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s")
        time.sleep(interval)
