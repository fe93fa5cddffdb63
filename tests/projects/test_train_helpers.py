"""mlkit.train: the metric logger, checkpoints, device/precision setup; in-process, real store."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

import mlkit  # noqa: E402
from mlkit.errors import NotFoundError  # noqa: E402
from mlkit.tracking.store import FileStore  # noqa: E402
from mlkit.train import (  # noqa: E402
    MetricLogger,
    Tracker,
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
    setup,
    unwrap,
)
from mlkit.train.runtime import resolve_precision  # noqa: E402


def test_import_mlkit_does_not_import_mlkit_train():
    import subprocess
    import sys

    code = "import mlkit, sys; assert 'mlkit.train' not in sys.modules and 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_metric_logger_logs_every_interval_in_one_call(store_root, monkeypatch):
    rt = setup("cpu", "fp32", seed=0)
    tracker = Tracker(rt)
    tracker.start({"lr": 0.1})
    calls = []
    real = mlkit.log_metrics
    monkeypatch.setattr(mlkit, "log_metrics", lambda m, step=None: (calls.append(step), real(m, step=step)))
    logger = MetricLogger(tracker, interval=5, unit="samples")
    for step in range(1, 13):
        logger.step(step, 32, train_loss=torch.tensor(float(step)), lr=0.1)
    tracker.end()
    assert calls == [5, 10]  # one call per log step, nothing in between
    history = FileStore(store_root).get_metric_history(tracker.run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(5, 5.0), (10, 10.0)]
    assert FileStore(store_root).get_run(tracker.run_id).data.metrics["samples_per_s"] > 0
    assert FileStore(store_root).get_run(tracker.run_id).info.status == "FINISHED"


@pytest.mark.parametrize(("told", "expected"), [("1", "\r\x1b[Kstep 5: "), (None, "step 5: ")])
def test_status_line_rewrites_itself_when_mlkit_says_stderr_is_a_terminal(
    store_root, monkeypatch, capsys, told, expected
):
    """Under `mlkit run` stderr is a pipe; MLKIT_STDERR_TTY=1 says it ends on the user's terminal."""
    if told:
        monkeypatch.setenv("MLKIT_STDERR_TTY", told)
    else:
        monkeypatch.delenv("MLKIT_STDERR_TTY", raising=False)
    rt = setup("cpu", "fp32", seed=0)
    tracker = Tracker(rt)
    tracker.start({})
    logger = MetricLogger(tracker, interval=5, unit="samples", total_steps=None)
    for step in range(1, 6):
        logger.step(step, 8, train_loss=torch.tensor(1.0))
    tracker.end()
    err = capsys.readouterr().err
    assert err.startswith(expected)
    assert ("\n" not in err) if told else err.endswith("\n")  # rewritten in place vs one plain line


def test_non_zero_ranks_never_touch_the_store(store_root):
    rt = setup("cpu", "fp32", seed=0)
    rt.rank = 1
    tracker = Tracker(rt)
    tracker.start({"a": 1})
    tracker.log_metrics({"x": 1.0}, step=1)
    tracker.end()
    assert tracker.run_id is None and not list(store_root.glob("*/*/meta.yaml"))


def test_checkpoint_round_trip_and_resume_lookup(store_root):
    run = FileStore(store_root).create_run("0")
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    path = FileStore(store_root).artifact_dir(run.info.run_id) / "checkpoints" / "last.pt"
    save_checkpoint(
        path, dict(model=model.state_dict(), optimizer=opt.state_dict(), step=7, epoch=1, args={"a": 1})
    )
    assert find_checkpoint(run.info.run_id) == path
    ckpt = load_checkpoint(path)  # weights_only=True: plain containers and tensors only
    assert ckpt["step"] == 7 and torch.equal(ckpt["model"]["weight"], model.weight.detach())
    assert not list(path.parent.glob("*.tmp"))


def test_resume_lookup_errors_name_the_run(store_root):
    with pytest.raises(NotFoundError):
        find_checkpoint("0123456789abcdef0123456789abcdef")
    run = FileStore(store_root).create_run("0")
    with pytest.raises(NotFoundError, match="no checkpoints/last.pt"):
        find_checkpoint(run.info.run_id)


def test_precision_resolution_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", cpu)
    with pytest.raises(ValueError, match="expected one of"):
        resolve_precision("fp8", cpu)


def test_unwrap_sees_through_compile_wrappers():
    m = torch.nn.Linear(2, 2)

    class Wrapper(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.module = inner

    assert unwrap(Wrapper(m)) is m and unwrap(m) is m


def test_a_requeued_job_resumes_its_own_run_and_a_first_start_begins_fresh(store_root, monkeypatch):
    from mlkit.train import resume_state

    run_id = FileStore(store_root).create_run("0").info.run_id
    monkeypatch.setenv("MLKIT_RESUME_RUN_ID", run_id)
    assert resume_state("") is None  # preempted before its first checkpoint: start fresh, no error
    other = FileStore(store_root).create_run("0").info.run_id
    save_checkpoint(FileStore(store_root).artifact_dir(other) / "checkpoints" / "last.pt", {"step": 3})
    assert resume_state(other)["step"] == 3  # no progress of its own yet: -P resume=RUN's
    path = FileStore(store_root).artifact_dir(run_id) / "checkpoints" / "last.pt"
    save_checkpoint(path, {"step": 11})
    assert resume_state("")["step"] == 11  # the job's own run, without a -P resume= param
    # started with -P resume=OTHER, preempted after checkpoints of its own: its argv still says
    # resume=OTHER on the restart, but its own progress wins (else every requeue starts over)
    assert resume_state(other)["step"] == 11
    monkeypatch.delenv("MLKIT_RESUME_RUN_ID")
    assert resume_state("") is None
    assert resume_state(other)["step"] == 3
