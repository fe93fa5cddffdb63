"""Sweep fixtures: a tiny project whose entry point logs a known function of its params per step,
`mlkit sweep` as a real subprocess, the stand-in NVML with four GPUs on the test's private state dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import run_mlkit, trainer_env

# loss(step) = (x - 0.3)^2 + 1/(step+1): the best x is 0.3, and the curves never cross.
# Each trial appends what it saw (its run, CUDA_VISIBLE_DEVICES, start and end times) to seen.jsonl.
TRAIN = """
import argparse, json, os, sys, time
import mlkit

p = argparse.ArgumentParser()
p.add_argument("--x", type=float, default=0.0)
p.add_argument("--steps", type=int, default=2)
p.add_argument("--sleep", type=float, default=0.0)
p.add_argument("--tag", default="")
a = p.parse_args()
if os.path.exists(os.path.join(os.path.dirname(__file__), f"fail-{a.tag}")):
    sys.exit(3)
start = time.time()
for step in range(a.steps):
    mlkit.log_metric("loss", (a.x - 0.3) ** 2 + 1.0 / (step + 1), step=step)
    time.sleep(a.sleep)
record = {"run_id": os.environ["MLKIT_RUN_ID"], "cvd": os.environ.get("CUDA_VISIBLE_DEVICES"),
          "start": start, "end": time.time(), "x": a.x}
with open(os.path.join(os.path.dirname(__file__), "seen.jsonl"), "a") as f:
    f.write(json.dumps(record) + "\\n")
"""

MLPROJECT = """
name: tiny
entry_points:
  main:
    parameters:
      x: {type: float, default: 0.0}
      steps: {type: int, default: 2}
      sleep: {type: float, default: 0.0}
      tag: {type: string, default: ""}
    command: "python train.py --x {x} --steps {steps} --sleep {sleep} --tag {tag}"
"""

# Flags every test sweep gets: no env build, no sampler thread.
FAST = ("--env-manager", "local", "--system-metrics-interval", "0")


@pytest.fixture(autouse=True)
def _sweep_env(monkeypatch: pytest.MonkeyPatch, isolated: Path) -> None:
    monkeypatch.setenv("MLKIT_FAKE_NVML", "four_idle")
    monkeypatch.setenv("MLKIT_KILL_GRACE", "2")
    monkeypatch.setenv("MLKIT_GPU_POLL_INTERVAL", "0.05")
    for key, value in trainer_env().items():
        if key in ("PYTHONPATH", "OMP_NUM_THREADS"):
            monkeypatch.setenv(key, value)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "MLproject").write_text(textwrap.dedent(MLPROJECT).lstrip())
    (root / "train.py").write_text(TRAIN.lstrip())
    return root


@pytest.fixture
def seen(project: Path):
    """What the trials recorded: one dict per trial that ran to its end."""

    def read() -> list[dict]:
        path = project / "seen.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    return read


@pytest.fixture
def sweep(tmp_path: Path):
    """`mlkit sweep <args> --json` (plus FAST) in a subprocess: (CompletedProcess, parsed JSON or None)."""

    def run(*args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess[str], dict | None]:
        fast = () if args[0] in ("resume", "show") else FAST
        result = run_mlkit("sweep", *args, *fast, "--json", cwd=tmp_path, timeout=timeout)
        doc = json.loads(result.stdout) if result.stdout.strip().startswith("{") else None
        return result, doc

    return run


@pytest.fixture
def start_sweep(tmp_path: Path):
    """Start `mlkit sweep ...` in the background; killed at the end of the test if still running."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlkit", "sweep", *args, *FAST, "--json"],
            cwd=tmp_path, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.fixture
def store(store_root: Path):
    from mlkit.tracking.store import FileStore

    return FileStore(store_root)
