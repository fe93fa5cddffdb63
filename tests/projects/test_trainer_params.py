"""The trainers run through `mlkit run -P ...` as a user types them: values written another way
than Python prints them, and values no training can use. Tiny settings: each run takes seconds."""

from __future__ import annotations

import shutil

import pytest

from helpers import REPO, run_mlkit

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

from tracking import test_faults  # noqa: E402

from mlkit.tracking.store import FileStore  # noqa: E402

small_fs = test_faults.small_fs  # a fixture: a 512 KiB tmpfs, unmounted after

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
    """`mlkit run` of a project's main entry point, tiny: `-P` for each param, other args as given."""
    given = dict(p.split("=", 1) for p in [*TINY[project], *params] if "=" in p)  # later ones win
    ps = [a for k, v in given.items() for a in ("-P", f"{k}={v}")]
    other = [p for p in params if "=" not in p]
    args = ["run", str(PROJECTS / project), "--env-manager", "local", "--gpus", "none", *ps, *other]
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


def test_a_killed_run_continued_with_run_id_resumes_its_checkpoint_and_logs_each_step_once(
    store_root, the_run
):
    """`mlkit run --run-id RUN` of a run killed mid-training used to start training over from
    step 0 in that run: every metric step was logged a second time, resumed_from_step said 0, and
    its checkpoint was ignored. (A requeued Slurm job, which resumes, crashed instead: the
    resumed_from_step param it logged differed from its first start's.)"""
    tiny = ["epochs=2", "log_interval=1"]  # 200 images: 160 to train, 5 steps an epoch
    r = mlkit_run("cnn", *tiny)
    assert r.returncode == 0, r.stderr[-3000:]
    run_id = the_run().info.run_id
    store = FileStore(store_root)
    assert steps(store, run_id, "train_loss") == list(range(1, 11))
    # as if killed at step 8, in epoch 2, after the checkpoint of epoch 1 (step 5)
    path = store.artifact_dir(run_id) / "checkpoints" / "last.pt"
    ckpt = torch.load(path, weights_only=True)
    torch.save({**ckpt, "step": 5, "epoch": 1}, path)
    for metric in (store_root / "0" / run_id / "metrics").iterdir():
        kept = [line for line in metric.read_text().splitlines() if int(line.split()[2]) <= 8]
        metric.write_text("".join(line + "\n" for line in kept))
    shutil.rmtree(store.artifact_dir(run_id) / "model")  # logged at the end only
    store.update_run_status(run_id, "KILLED")

    r = mlkit_run("cnn", *tiny, "--run-id", run_id)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"continuing run {run_id} from its checkpoint at step 5" in r.stderr
    run = the_run()
    assert run.info.status == "FINISHED"
    assert steps(store, run_id, "train_loss") == list(range(1, 11))  # 6-8 once, from the first start
    assert steps(store, run_id, "val_accuracy") == [5, 10]
    assert torch.load(path, weights_only=True)["step"] == 10  # only epoch 2 ran again
    assert (store.artifact_dir(run_id) / "model" / "MLmodel").is_file()


def steps(store, run_id: str, key: str) -> list[int]:
    return [m.step for m in store.get_metric_history(run_id, key)]


@pytest.mark.parametrize(
    "project, param, says",
    [
        ("cnn", "epochs=0", "argument --epochs: must be at least 1, got 0"),
        ("cnn", "batch_size=-1", "argument --batch-size: must be at least 1, got -1"),
        ("cnn", "batch_size=1000", "--batch-size 1000 is more than the 160 training images"),
        ("rnn", "max_steps=-1", "argument --max-steps: must be at least 1, got -1"),
        ("rnn", "batch_size=0", "argument --batch-size: must be at least 1, got 0"),
        ("rnn", "eval_interval=0", "argument --eval-interval: must be at least 1, got 0"),
        ("gan", "epochs=0", "argument --epochs: must be at least 1, got 0"),
        ("gan", "batch_size=1000", "--batch-size 1000 is more than the 64 training images"),
    ],
)
def test_a_value_that_trains_nothing_fails_the_run_saying_so(project, param, says, store_root, the_run):
    """epochs=0 or -1, batch_size=-1 or larger than the data, max_steps=-1 and rnn's batch_size=0
    used to end FINISHED having trained nothing (the GAN logging loss nan), with an untrained model
    logged as the result; cnn/gan batch_size=0 and rnn eval_interval=0 died in a ZeroDivisionError."""
    r = mlkit_run(project, param)
    assert r.returncode != 0 and says in r.stderr, r.stderr[-3000:]
    run = the_run()
    assert run.info.status == "FAILED"
    assert not (FileStore(store_root).artifact_dir(run.info.run_id) / "model").exists()


@pytest.mark.parametrize(
    "project, key, longer",
    [("cnn", "train_loss", "epochs=3"), ("rnn", "val_loss", "max_steps=6"), ("gan", "loss_d", "epochs=3")],
)
def test_a_diverged_run_fails_at_the_next_log_step_and_keeps_no_nan_checkpoint(
    project, key, longer, store_root, the_run
):
    """With lr=1e9 every trainer used to train on nan/inf to the end, log a nan model and end
    FINISHED; a cron job would do so for days."""
    r = mlkit_run(project, "lr=1e9", "log_interval=1", longer)
    assert r.returncode == 1, r.stderr[-3000:]
    assert f"{key} is " in r.stderr and "training diverged" in r.stderr, r.stderr[-3000:]
    run = the_run()
    assert run.info.status == "FAILED"
    art = FileStore(store_root).artifact_dir(run.info.run_id)
    assert not (art / "model").exists()
    if (art / "checkpoints" / "last.pt").exists():  # an epoch that ended before the loss went bad
        ckpt = torch.load(art / "checkpoints" / "last.pt", weights_only=True)
        weights = [v for k, v in ckpt.items() if k in ("model", "G", "D") for v in v.values()]
        assert weights and all(torch.isfinite(w).all() for w in weights)


def test_a_checkpoint_with_nan_weights_is_refused_and_the_last_good_one_kept(tmp_path):
    from mlkit.train import load_checkpoint, save_checkpoint

    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "step": 5})
    bad = {"model": {"w": torch.ones(3)}, "opt": {"state": [torch.tensor([1.0, float("inf")])]}, "step": 6}
    with pytest.raises(FloatingPointError, match=r"checkpoint\['opt'\]\['state'\]\[0\] has nan or inf"):
        save_checkpoint(path, bad)
    assert load_checkpoint(path)["step"] == 5
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_device_cuda_without_a_gpu_says_so(the_run):
    """-P device=cuda under --gpus none (or on a box without a GPU) died in an AttributeError from
    torch's internals (`torch._C` has no `_cuda_setDevice`), which says nothing to a user."""
    r = mlkit_run("cnn", "device=cuda")
    assert r.returncode == 1
    assert "--device cuda: no CUDA device is visible to this process" in r.stderr, r.stderr[-3000:]
    assert "AttributeError" not in r.stderr
    assert the_run().info.status == "FAILED"


class Wide(torch.nn.Module):
    def __init__(self, n: int = 200):
        super().__init__()
        self.init_args = {"n": n}
        self.fc = torch.nn.Linear(n, n)  # 160 kB of weights

    def forward(self, x):
        return self.fc(x)


def test_a_full_disk_while_logging_the_model_says_so_and_leaves_nothing(small_fs):
    """A trainer whose store filled up while it logged the model died in torch's
    `RuntimeError: [enforce fail at inline_container.cc:672] . unexpected pos 268608 vs 268504`."""
    from mlkit.errors import StoreError
    from mlkit.models.save import save_model

    test_faults._fill(small_fs / "filler", leave=64 * 1024)
    with pytest.raises(StoreError, match="the disk is full"):
        save_model(Wide(), small_fs / "model")
    assert [p.name for p in small_fs.iterdir()] == ["filler"]


@pytest.mark.parametrize("torn", [b"", b"PK\x03\x04 half a zip"])
def test_resuming_from_a_torn_checkpoint_names_it_and_what_to_do(torn, store_root, the_run):
    """An empty or truncated last.pt (a crash before the data reached the disk, a copy cut short)
    failed a resume with a bare `EOFError` or torch's miniz message, naming no file."""
    r = mlkit_run("cnn")
    assert r.returncode == 0, r.stderr[-3000:]
    first = the_run().info.run_id
    path = FileStore(store_root).artifact_dir(first) / "checkpoints" / "last.pt"
    path.write_bytes(torn)
    r = mlkit_run("cnn", f"resume={first}")
    assert r.returncode == 1
    assert f"{path}: the checkpoint cannot be read" in r.stderr, r.stderr[-3000:]
    assert "resume from another run" in r.stderr


@pytest.mark.parametrize("other", ["rnn", "gan"])
def test_resuming_another_trainers_run_says_so(other, store_root):
    """-P resume=<a cnn run> given to the rnn or the gan (a run id pasted into the wrong command)
    died in `TypeError: CharLM.__init__() got an unexpected keyword argument 'in_channels'` or
    `KeyError: 'G'`."""
    r = mlkit_run("cnn")
    assert r.returncode == 0, r.stderr[-3000:]
    (cnn_run,) = FileStore(store_root).search_runs(["0"])[0]
    r = mlkit_run(other, f"resume={cnn_run.info.run_id}")
    assert r.returncode == 1
    assert f"run {cnn_run.info.run_id}'s checkpoint was written by another trainer" in r.stderr, r.stderr[
        -2000:
    ]


def test_cnn_without_a_held_out_split_logs_its_model(store_root, the_run):
    """-P val_fraction=0 (which evaluate() allows) trained every epoch, then died logging the model:
    its input example was 4 validation images, and there were none (`cannot reshape tensor of 0
    elements`), so the whole run ended FAILED with no model."""
    r = mlkit_run("cnn", "val_fraction=0")
    assert r.returncode == 0, r.stderr[-3000:]
    run = the_run()
    assert run.info.status == "FINISHED" and run.data.params["val_size"] == "0"
    assert (FileStore(store_root).artifact_dir(run.info.run_id) / "model" / "input_example.json").is_file()


@pytest.mark.parametrize(
    "project, param, says",
    [
        ("cnn", "val_fraction=-0.5", "argument --val-fraction: must be at least 0 and below 1, got -0.5"),
        ("cnn", "val_fraction=1", "argument --val-fraction: must be at least 0 and below 1, got 1"),
        ("rnn", "val_fraction=0", "--val-fraction 0.0 holds out 0 bytes of 5000"),
        ("gan", "ema_decay=1.5", "argument --ema-decay: must be at least 0 and below 1, got 1.5"),
        ("rnn", "val_fraction=0.001", "--val-fraction 0.001 holds out 5 bytes of 5000"),
    ],
)
def test_a_held_out_share_that_cannot_work_fails_saying_so(project, param, says, store_root, the_run):
    """cnn val_fraction=-0.5 ended FINISHED, silently training on a few images per class and
    validating on the rest; rnn val_fraction=0 trained on nothing (`data[:-0]` is empty) and died
    in `random_ expects 'from' to be less than 'to'`, as did a held-out tail shorter than seq_len.
    gan ema_decay=1.5 ended FINISHED with a moving average that grows without bound as its model."""
    r = mlkit_run(project, param)
    assert r.returncode != 0 and says in r.stderr, r.stderr[-3000:]
    assert the_run().info.status == "FAILED"


def test_resuming_a_run_that_already_reached_the_total_says_nothing_would_train(store_root):
    """-P resume=RUN with an --epochs the checkpoint already reached (epochs counts the total, not
    more) ended FINISHED with no step trained and the same model logged again as a new result."""
    r = mlkit_run("cnn")
    assert r.returncode == 0, r.stderr[-3000:]
    (first,) = FileStore(store_root).search_runs(["0"])[0]
    r = mlkit_run("cnn", f"resume={first.info.run_id}")
    assert r.returncode == 1
    says = f"run {first.info.run_id}'s checkpoint is at epoch 1, which --epochs 1 already reaches"
    assert says in r.stderr, r.stderr[-2000:]
    r = mlkit_run("cnn", f"resume={first.info.run_id}", "epochs=2")
    assert r.returncode == 0, r.stderr[-3000:]


def test_rnn_reads_no_more_of_its_data_than_max_bytes(tmp_path, the_run):
    """rnn read the whole file before cutting it to --max-bytes: a 50 GB corpus went into memory
    first, and -P data=/dev/zero (or a pipe that stays open) read until memory ran out. Here: a
    FIFO whose writer keeps it open after 20 kB; before the fix the run never got past reading."""
    import os
    import subprocess
    import sys

    fifo = tmp_path / "corpus"
    os.mkfifo(fifo)
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import time; f = open({str(fifo)!r}, 'wb'); f.write(b'def f(): pass\\n' * 1500); f.flush(); time.sleep(600)",
        ]
    )
    try:
        r = mlkit_run("rnn", f"data={fifo}", "max_bytes=20000")
    finally:
        writer.kill()
        writer.wait()
    assert r.returncode == 0, r.stderr[-3000:]
    assert the_run().data.params["corpus_bytes"] == "20000"


def test_a_requeued_slurm_job_continues_its_run_instead_of_crashing(store_root, the_run, train):
    """A requeued job's start (MLKIT_RESUME_RUN_ID = its own run) resumed its checkpoint, then
    died logging `resumed_from_step`: its first start had logged 0, and a param never changes
    (`changing param values is not allowed: param 'resumed_from_step' ... '0' ... '5'`)."""
    from helpers import trainer_env

    r = mlkit_run("cnn", "epochs=2", "log_interval=1")
    assert r.returncode == 0, r.stderr[-3000:]
    run_id = the_run().info.run_id
    store = FileStore(store_root)
    path = store.artifact_dir(run_id) / "checkpoints" / "last.pt"
    torch.save({**torch.load(path, weights_only=True), "step": 5, "epoch": 1}, path)  # preempted in epoch 2
    shutil.rmtree(store.artifact_dir(run_id) / "model")
    store.update_run_status(run_id, "RUNNING")
    args = ["--data", "synthetic", "--synthetic-size", "200", "--width", "4", "--epochs", "2"]
    args += ["--batch-size", "32", "--log-interval", "1", "--resume="]
    r = train("cnn", *args, env=trainer_env(MLKIT_RUN_ID=run_id, MLKIT_RESUME_RUN_ID=run_id))
    assert r.returncode == 0, r.stderr[-3000:]
    assert steps(store, run_id, "train_loss") == list(range(1, 11))
    assert (store.artifact_dir(run_id) / "model" / "MLmodel").is_file()


def test_a_fresh_run_logs_its_first_steps_though_system_metrics_came_first(store_root, monkeypatch):
    """The supervisor's sampler logs `system/*` with steps 0, 1, 2... from the moment the trainer
    starts; a trainer slow to start (a big import, a data load) found those steps logged and took
    the run for one continued in place, dropping its own metrics of the same steps."""
    from mlkit.train import Tracker, setup

    store = FileStore(store_root)
    run_id = store.create_run("0").info.run_id  # as `mlkit run` creates it
    for tick in range(20):  # 100 s of start-up at the default 5 s interval
        store.log_metric(run_id, "system/cpu_utilization_percentage", 50.0, step=tick)
    monkeypatch.setenv("MLKIT_RUN_ID", run_id)
    tracker = Tracker(setup("cpu", "fp32", seed=0))
    tracker.start({"lr": 0.001})
    for step in (1, 5, 10, 25):
        tracker.log_metrics({"train_loss": 1.0 / step}, step=step)
    tracker.end()
    assert steps(store, run_id, "train_loss") == [1, 5, 10, 25]
