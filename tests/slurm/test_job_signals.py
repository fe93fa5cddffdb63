"""The job step (`python -m mlkit.backends.slurm.job`) without a cluster: its child (srun, or the
supervisor) and `scontrol` are stand-ins on PATH that record what they got, so what the step sends
on USR2 and when it requeues are checked with real processes and signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from slurmtools import wait_until

from mlkit.tracking.store import FileStore

# stands in for srun or the supervisor: records the signals it gets, exits on the first one
CHILD = f"""#!{sys.executable}
import os, signal, sys
out = os.environ["FAKE_OUT"]
def on(signum, frame):
    with open(out + ".signals", "a") as fh:
        fh.write(signal.Signals(signum).name + "\\n")
    sys.exit(int(os.environ.get("FAKE_EXIT", "0")))
for s in (signal.SIGUSR2, signal.SIGINT, signal.SIGTERM):
    signal.signal(s, on)
with open(out + ".argv", "w") as fh:
    fh.write(" ".join(sys.argv[1:]))
open(out + ".ready", "w").close()
signal.pause()
"""
SCONTROL = '#!/bin/sh\necho "$@" >> "$FAKE_OUT.scontrol"\nexit "${FAKE_SCONTROL_RC:-0}"\n'


@pytest.fixture
def fakes(tmp_path: Path) -> Path:
    bin_ = tmp_path / "fakebin"
    bin_.mkdir()
    for name, text in (("srun", CHILD), ("python", CHILD), ("scontrol", SCONTROL)):
        (bin_ / name).write_text(text)
        (bin_ / name).chmod(0o755)
    return bin_


def _step(fakes: Path, store_root: Path, run_id: str, *, nodes: int, status: str, scontrol_rc: int = 0):
    """Start the job step on `run_id`, USR2 it once its child is up; (exit code, fake's files)."""
    spec = fakes.parent / "job.json"
    spec.write_text(json.dumps({"version": 1, "store": str(store_root), "python": str(fakes / "python"),
                                "nodes": nodes, "rdzv_port": 29400, "requeue": True,
                                "tasks": [{"run_id": run_id, "argv": ["run", "x"]}]}))  # fmt: skip
    out = fakes.parent / "fake"
    env = {**os.environ, "PATH": f"{fakes}:{os.environ['PATH']}", "FAKE_OUT": str(out), "SLURM_JOB_ID": "42",
           "SLURM_RESTART_COUNT": "0", "FAKE_SCONTROL_RC": str(scontrol_rc)}  # fmt: skip
    env.pop("SLURM_JOB_NODELIST", None)
    step = subprocess.Popen([sys.executable, "-m", "mlkit.backends.slurm.job", str(spec)], env=env)
    try:
        wait_until(lambda: Path(f"{out}.ready").exists() or step.poll() is not None, 30, 0.05)
        FileStore(store_root).set_terminated(run_id, status)  # how the run ended before USR2 came
        step.send_signal(signal.SIGUSR2)
        code = step.wait(30)
    finally:
        if step.poll() is None:
            step.kill()
            step.wait()
    return code, out


def _read(path: str) -> str:
    return Path(path).read_text() if Path(path).exists() else ""


def test_multi_node_step_forwards_usr2_to_srun_not_a_single_sigint(fakes, store_root):
    """A single SIGINT only makes srun print its tasks' status; USR2 reaches each node's step."""
    run_id = FileStore(store_root).create_run("0").info.run_id
    code, out = _step(fakes, store_root, run_id, nodes=2, status="FINISHED")
    assert _read(f"{out}.argv").startswith("--nodes=2 ")  # the child was srun
    assert _read(f"{out}.signals") == "SIGUSR2\n"
    assert code == 0


@pytest.mark.parametrize("status", ["FINISHED", "FAILED"])
def test_a_run_that_ended_on_its_own_is_not_requeued(fakes, store_root, status):
    run_id = FileStore(store_root).create_run("0").info.run_id
    code, out = _step(fakes, store_root, run_id, nodes=1, status=status)
    assert _read(f"{out}.signals") == "SIGINT\n"  # the supervisor's checkpoint signal
    run = FileStore(store_root).get_run(run_id)
    assert run.info.status == status
    assert "mlkit.slurm.requeued" not in run.data.tags and "mlkit.failure_reason" not in run.data.tags
    assert _read(f"{out}.scontrol") == ""  # Slurm was not asked to requeue
    assert code == 0


@pytest.mark.parametrize(("rc", "status"), [(0, "SCHEDULED"), (1, "KILLED")])
def test_a_checkpointed_run_is_scheduled_again_only_once_slurm_requeued_it(fakes, store_root, rc, status):
    run_id = FileStore(store_root).create_run("0").info.run_id
    code, out = _step(fakes, store_root, run_id, nodes=1, status="KILLED", scontrol_rc=rc)
    assert _read(f"{out}.scontrol") == "requeue 42\n"
    run = FileStore(store_root).get_run(run_id)
    assert run.info.status == status
    assert (run.data.tags.get("mlkit.slurm.requeued") == "1") == (rc == 0)
    assert code == rc
