"""The trainers run through `mlkit run -P ...` as a user types them: values written another way
than Python prints them, and values no training can use. Tiny settings: each run takes seconds."""

from __future__ import annotations

import pytest

from helpers import REPO, run_mlkit

pytest.importorskip("torch")
pytestmark = pytest.mark.torch

PROJECTS = REPO / "projects"
TINY = {
    "cnn": ["data=synthetic", "synthetic_size=200", "width=4", "epochs=1", "batch_size=32"],
    "rnn": [
        "data=synthetic",
        "synthetic_size=5000",
        "embed=8",
        "hidden=16",
        "layers=1",
        "batch_size=4",
        "seq_len=16",
        "max_steps=2",
        "eval_interval=2",
        "eval_batches=1",
        "sample_length=8",
    ],
    "gan": ["data=synthetic", "synthetic_size=64", "image_size=8", "ngf=8", "ndf=8", "nz=16", "epochs=1"],
}


def mlkit_run(project: str, *params: str):
    ps = [a for p in [*TINY[project], *params] for a in ("-P", p)]
    args = ["run", str(PROJECTS / project), "--env-manager", "local", "--gpus", "none", *ps]
    return run_mlkit(*args, env={"OMP_NUM_THREADS": "1"}, timeout=180)


@pytest.mark.parametrize("project", ["cnn", "rnn", "gan"])
def test_a_float_written_as_the_user_likes_it_runs(project, the_run):
    """`-P lr=1e-3` (or lr=1, lr=.001) failed every trainer at its first line: mlkit run had logged
    the param as typed ('1e-3') and the trainer logged the parsed flag ('0.001') under the same key,
    which the store refuses as a changed param."""
    r = mlkit_run(project, "lr=1e-3")
    assert r.returncode == 0, r.stderr[-3000:]
    run = the_run()
    assert run.info.status == "FINISHED" and run.data.params["lr"] == "1e-3"
