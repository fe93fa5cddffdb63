"""A real single-node Slurm cluster for the whole session (tests/slurm/cluster.py), started without
systemd in a scratch directory and stopped at the end. Without Slurm installed the tests skip with
the reason, except under CI, where they fail: CI installs slurm-wlm, munge, slurmdbd, mariadb-server."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cluster import Cluster, missing  # noqa: E402

PROJECT = """name: slurmcheck
entry_points:
  main:
    parameters:
      code: {type: int, default: 0}
      sleep: {type: float, default: 0}
      steps: {type: int, default: 3}
    command: "python main.py --code {code} --sleep {sleep} --steps {steps}"
"""
# logs a param-driven metric, prints its GPUs, can sleep (checkpointing on SIGINT), exits with --code
MAIN = r"""
import argparse, os, sys, time
from pathlib import Path
import mlkit

p = argparse.ArgumentParser()
p.add_argument("--code", type=int); p.add_argument("--sleep", type=float); p.add_argument("--steps", type=int)
a = p.parse_args()
# one write per line: with 2 GPUs the job runs 2 torchrun ranks that share one pipe
print("CVD=" + os.environ.get("CUDA_VISIBLE_DEVICES", "-") + "\n", end="", flush=True)
run_id = os.environ["MLFLOW_RUN_ID"]
ckpt = Path(mlkit.get_artifact_uri().removeprefix("file://")) / "ckpt.txt"
start = 0
if os.environ.get("MLKIT_RESUME_RUN_ID") == run_id and ckpt.exists():
    start = int(ckpt.read_text())
    print(f"resumed at step {start}", flush=True)
for step in range(start, a.steps):
    mlkit.log_metric("loss", 1.0 / (step + 1), step=step)
print("trained", flush=True)
try:
    deadline = time.time() + a.sleep
    while time.time() < deadline:
        time.sleep(0.1)
except KeyboardInterrupt:
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    ckpt.write_text(str(a.steps))
    print("checkpointed on SIGINT", flush=True)
    sys.exit(130)
sys.exit(a.code)
"""


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory):
    why = missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"Slurm tests must run in CI: {why}")
        pytest.skip(f"no Slurm cluster: {why}")
    root = tmp_path_factory.mktemp("slurm")
    cluster = Cluster(root)
    accounting = shutil.which("slurmdbd") is not None and shutil.which("mariadb-install-db") is not None
    if not accounting and os.environ.get("CI"):
        pytest.fail("CI must test Slurm with accounting: install slurmdbd and mariadb-server")
    try:
        cluster.start(accounting=accounting)
    except Exception:
        cluster.stop()
        raise
    cluster.can_account = accounting
    yield cluster
    cluster.stop()


@pytest.fixture
def slurm(slurm_cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    """The cluster, with SLURM_CONF pointing at it for this test's mlkit and Slurm commands."""
    for key, value in slurm_cluster.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MLKIT_SLURM_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(slurm_cluster.root / "xdg"))
    return slurm_cluster


@pytest.fixture
def project(tmp_path: Path) -> Path:
    d = tmp_path / "proj"
    d.mkdir()
    (d / "MLproject").write_text(PROJECT)
    (d / "main.py").write_text(MAIN)
    return d
