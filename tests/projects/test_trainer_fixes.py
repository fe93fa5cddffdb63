"""Defects found while reworking the trainers (issue 15), each pinned by a test that failed before
the fix; and the layout the trainers keep (one line per flag, small step functions)."""

from __future__ import annotations

import ast
import sys
import types

import pytest

from helpers import REPO, trainer_env

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

from mlkit.tracking.store import FileStore  # noqa: E402
from mlkit.train.data import random_shift  # noqa: E402

PROJECTS = REPO / "projects"
RNN_DRY_RUN = ["--dry-run", "--data", "synthetic", "--synthetic-size", "5000"]
RNN_DRY_RUN += ["--hidden", "16", "--embed", "8", "--batch-size", "4", "--seq-len", "16"]


def test_rnn_dry_run_saves_the_args_it_logged_and_runs_one_step(train, store_root, the_run):
    """--dry-run used to shrink max_steps, eval_interval, eval_batches and sample_length in `args`
    after logging them, so the checkpoint's args said max_steps=1 while the params said 500."""
    r = train("rnn", *RNN_DRY_RUN)
    assert r.returncode == 0, r.stderr[-3000:]
    run = the_run()
    store = FileStore(store_root)
    ckpt = torch.load(store.artifact_dir(run.info.run_id) / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["args"]["max_steps"] == 500 and run.data.params["max_steps"] == "500"
    logged = {k: "" if v is None else str(v) for k, v in ckpt["args"].items()}
    assert logged == {k: run.data.params[k] for k in logged}  # every flag: params == checkpoint
    # ...and the dry run is still one step with one evaluation
    assert ckpt["step"] == 1
    assert [m.step for m in store.get_metric_history(run.info.run_id, "val_loss")] == [1]


def test_gan_run_leaves_no_temporary_directory(train, tmp_path, the_run, store_root):
    """Every GAN run used to leave a gan-samples-XXXX directory (with its grids) in $TMPDIR."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    args = ["--epochs", "2", "--image-size", "8", "--ngf", "8", "--ndf", "8", "--nz", "16"]
    r = train("gan", *args, "--batch-size", "512", env=trainer_env(TMPDIR=str(tmp)))
    assert r.returncode == 0, r.stderr[-3000:]
    left = [p.name for p in tmp.iterdir() if not p.name.startswith("torchinductor_")]  # torch's cache
    assert left == []
    samples = FileStore(store_root).artifact_dir(the_run().info.run_id) / "samples"
    assert sorted(p.name for p in samples.iterdir()) == ["epoch_001.png", "epoch_002.png"]


def test_check_samples_leaves_sys_modules_alone(project_module, monkeypatch):
    """check_samples.py used to set sys.modules['model'] to the CNN's model.py (so that it could
    import cnn/train.py for its augmentation), replacing whatever `model` the process had."""
    check = project_module("gan", "check_samples")
    theirs = types.ModuleType("model")
    monkeypatch.setitem(sys.modules, "model", theirs)
    before = set(sys.modules)
    net, data = check.train_classifier(image_size=8, epochs=1, seed=0)
    assert sys.modules["model"] is theirs
    assert not {m for m in set(sys.modules) - before if m.startswith(("cnn", "gan", "model"))}
    assert net(data.x_val[:3]).shape == (3, 10)


def test_random_shift_translates_each_image_within_the_border():
    torch.manual_seed(0)
    x = torch.rand(64, 2, 6, 5) * 2 - 1  # (B, C, H, W)
    out = random_shift(x, 2)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2,) * 4, value=-1.0)
    offsets = set()
    for b in range(len(x)):  # each output is the padded input cropped at one offset in [0, 4]^2
        (hit,) = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(out[b], padded[b, :, dy : dy + 6, dx : dx + 5])
        ]
        offsets.add(hit)
    assert len(offsets) > 5  # the offsets differ per image
    assert torch.equal(random_shift(x, 0), x)


@pytest.mark.parametrize("project", ["cnn", "rnn", "gan"])
def test_trainer_layout_stays_compact(project):
    """One line per hyperparameter (the formatter must not spread them), step functions with
    a handful of arguments, a main() that fits on a screen."""
    source = (PROJECTS / project / "train.py").read_text()
    assert len(source.splitlines()) <= 330
    functions = {n.name: n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef)}
    flags = [
        c
        for c in ast.walk(functions["parse_args"])
        if isinstance(c, ast.Call) and getattr(c.func, "id", "") == "a"
    ]
    assert len(flags) >= 10 and all(c.lineno == c.end_lineno for c in flags)
    for name in ("train_one_epoch", "train_step"):
        if name in functions:
            assert len(functions[name].args.args) <= 5, name
    assert functions["main"].end_lineno - functions["main"].lineno < 45
