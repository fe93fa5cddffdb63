"""The store loses nothing under faults: a full disk, processes racing on a new store, readers
while writers are killed. Real processes, a real small filesystem (tmpfs), MLflow as the reader."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlkit.tracking.store import FileStore

from helpers import run_mlkit, trainer_env


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs (root only), always unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(path: Path, leave: int = 0) -> None:
    """Write `path` until the filesystem is full, then give back `leave` bytes."""
    with open(path, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
                fh.flush()
        except OSError:
            pass
    if leave:
        os.truncate(path, max(0, path.stat().st_size - leave))


def _mlflow_client(root: Path):
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=root.as_uri())


LOGGER = """
import sys
import mlkit
from mlkit.errors import StoreError
keys = [f"m{i}" for i in range(8)]
mlkit.start_run(run_name="filler")
errors = []
step = 0
while len(errors) < 20 and step < 200000:  # until the disk is full, then a little more
    for key in keys:
        try:
            mlkit.log_metric(key, step + 0.5, step=step)
        except StoreError as exc:
            errors.append(str(exc))
        except OSError as exc:
            errors.append("raw " + repr(exc))
    step += 1
print("FULL " + (errors[0] if errors else "no error"), flush=True)
sys.stdin.readline()  # the test frees space
for key in keys:
    for s in range(step, step + 5):
        mlkit.log_metric(key, s + 0.25, step=s)
mlkit.end_run()
print("DONE", flush=True)
"""


@pytest.mark.mlflow
def test_disk_full_leaves_whole_metric_lines(small_fs: Path) -> None:
    root = small_fs / "mlruns"
    FileStore(root).close()
    _fill(small_fs / "filler", leave=48 * 1024)
    proc = subprocess.Popen(
        [sys.executable, "-c", LOGGER], env=trainer_env(MLKIT_TRACKING_URI=str(root)),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert line.startswith("FULL "), (line, proc.stderr.read() if proc.poll() is not None else "")
        message = line[5:]
        assert "disk is full" in message and str(root) in message, message
        run_dir = next(p.parent.parent for p in root.glob("0/*/metrics/m0"))
        for path in (run_dir / "metrics").iterdir():
            data = path.read_bytes()
            assert data == b"" or data.endswith(b"\n"), (path.name, data[-40:])
        (small_fs / "filler").unlink()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "DONE", proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
    store = FileStore(root)
    run_id = run_dir.name
    ours = {
        k: [(m.timestamp, m.value, m.step) for m in store.get_metric_history(run_id, k)]
        for k in store.metric_keys(run_id)
    }
    assert len(ours) == 8 and all(h and h[-1][2] == h[-5][2] + 4 for h in ours.values())
    for history in ours.values():  # every value written is a whole, well-formed line
        assert all(value in (step + 0.5, step + 0.25) for _ts, value, step in history)
    assert store.get_run(run_id).info.status == "FINISHED"
    client = _mlflow_client(root)
    theirs = client.get_run(run_id)
    assert theirs.info.status == "FINISHED" and set(theirs.data.metrics) == set(ours)
    for key, history in ours.items():
        assert [(m.timestamp, m.value, m.step) for m in client.get_metric_history(run_id, key)] == history


def test_metric_write_error_truncates_back(store_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A short write followed by an error leaves the file as it was (no torn line), and says why."""
    import errno

    from mlkit.errors import StoreError

    store = FileStore(store_root)
    run_id = store.create_run("0").info.run_id
    store.log_metric(run_id, "loss", 1.0, step=0, timestamp=1)
    path = store.run_dir(run_id) / "metrics" / "loss"
    before = path.read_bytes()
    real_write = os.write
    calls = []

    def short_then_full(fd: int, data) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data)[:5])  # a short write
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", short_then_full)
    with pytest.raises(StoreError, match="disk is full"):
        store.log_metric(run_id, "loss", 2.0, step=1, timestamp=2)
    monkeypatch.setattr(os, "write", real_write)
    assert path.read_bytes() == before
    store.log_metric(run_id, "loss", 3.0, step=2, timestamp=3)
    assert [(m.value, m.step) for m in store.get_metric_history(run_id, "loss")] == [(1.0, 0), (3.0, 2)]


FILLING_ENTRY = """
import os, sys
import mlkit
from mlkit.errors import StoreError
mlkit.start_run()
mlkit.log_param("p", "1")
with open(sys.argv[1], "wb", buffering=0) as fh:  # the store's filesystem fills up while the run goes on
    try:
        while True:
            fh.write(b"\\0" * 4096)
            fh.flush()
    except OSError:
        pass
try:
    for step in range(2000):
        mlkit.log_metric("loss", 1.0, step=step)
except StoreError as exc:
    print("store said:", exc, flush=True)
sys.exit(0)
"""


def test_cli_run_whose_store_fills_up_keeps_exit_code(small_fs: Path, tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "MLproject").write_text(
        textwrap.dedent(
            """
            name: fill
            entry_points:
              main:
                parameters:
                  filler: string
                command: "python fill.py {filler}"
            """
        )
    )
    (project / "fill.py").write_text(FILLING_ENTRY)
    root = small_fs / "mlruns"
    done = run_mlkit(
        "run", str(project), "--env-manager", "local", "--gpus", "none", "--system-metrics-interval", "0",
        "--store", str(root), "--json", "-P", f"filler={small_fs / 'filler'}",
        env=trainer_env(), timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["exit_code"] == 0
    assert "store said:" in done.stderr and "disk is full" in done.stderr
    (small_fs / "filler").unlink()
    run = FileStore(root).get_run(summary["run_id"])
    assert run.info.status == "FINISHED", run.info.status
    assert run.info.end_time


def _racer(root: str, go: int, report: int) -> None:
    """In a forked child: wait for the start signal, create runs in `root`, report, exit."""
    status = 0
    try:
        os.read(go, 1)
        store = FileStore(root)
        for _ in range(3):
            store.create_run("0")
    except BaseException as exc:  # report, never hang the parent
        os.write(report, (repr(exc)[:200] + "\n").encode())
        status = 1
    finally:
        os._exit(status)


def test_processes_racing_on_a_new_store(tmp_path: Path) -> None:
    """8 real processes create runs in a store that does not exist yet, 20 times over."""
    failures = []
    for trial in range(20):
        root = str(tmp_path / f"store{trial}")
        go_r, go_w = os.pipe()
        rep_r, rep_w = os.pipe()
        pids = []
        for _ in range(8):
            pid = os.fork()
            if pid == 0:
                _racer(root, go_r, rep_w)
            pids.append(pid)
        os.write(go_w, b"x" * 8)  # all at once
        codes = [os.waitpid(pid, 0)[1] for pid in pids]
        os.close(rep_w)
        with os.fdopen(rep_r) as fh:
            failures += fh.read().splitlines()
        for fd in (go_r, go_w):
            os.close(fd)
        assert codes == [0] * 8, failures
        store = FileStore(root)
        assert [e.experiment_id for e in store.list_experiments()] == ["0"]
        assert store.count_runs("0") == 24
        assert set(os.listdir(root)) - {".mlkit-experiments.lock"} == {".trash", "0"}, os.listdir(root)
    assert failures == []


def test_a_half_made_default_experiment_is_never_seen(tmp_path: Path) -> None:
    """`0/` exists only whole: a reader never finds the directory without its meta.yaml."""
    from mlkit.tracking import store as store_mod

    root = tmp_path / "mlruns"
    seen = []
    real = store_mod.FileStore._init_root

    def spy(self) -> None:
        real(self)
        seen.append((self.root / "0" / "meta.yaml").is_file())

    FileStore.__init__  # noqa: B018 - the real class is used below
    store_mod.FileStore._init_root = spy
    try:
        FileStore(root)
    finally:
        store_mod.FileStore._init_root = real
    assert seen == [True]
    assert not list(root.glob(".0.*"))


def _writer(root: Path, run_id: str, ready: int) -> None:
    """In a forked child: write params and tags as fast as it can until killed."""
    try:
        store = FileStore(root)
        os.write(ready, b"r")
        i = 0
        while True:
            store.log_param(run_id, f"p{i % 50}", "v")  # a new key, then the same again
            store.set_tag(run_id, f"t{i % 7}", str(i))
            store.set_tags(run_id, {f"s{i % 5}": str(i), "group/x": str(i)})
            i += 1
    finally:
        os._exit(1)


@pytest.mark.mlflow
def test_readers_never_see_temp_files(store_root: Path) -> None:
    store = FileStore(store_root)
    run_id = store.create_run("0").info.run_id
    client = _mlflow_client(store_root)
    phantoms, errors = [], []
    rng = random.Random(12)
    client.get_run(run_id)  # MLflow's imports done before the clock starts
    for _trial in range(20):
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            _writer(store_root, run_id, ready_w)
        try:
            assert os.read(ready_r, 1) == b"r"
            deadline = time.monotonic() + rng.uniform(0.02, 0.12)
            while time.monotonic() < deadline:
                try:
                    data = client.get_run(run_id).data
                except Exception as exc:  # noqa: BLE001 - what MLflow raised is the finding
                    errors.append(repr(exc))
                    continue
                phantoms += [k for k in (*data.params, *data.tags) if k.endswith(".tmp")]
        finally:
            os.kill(pid, signal.SIGKILL)  # at a random point of a write
            os.waitpid(pid, 0)
            os.close(ready_r)
            os.close(ready_w)
    data = client.get_run(run_id).data
    phantoms += [k for k in (*data.params, *data.tags) if k.endswith(".tmp")]
    ours = FileStore(store_root).get_run(run_id).data
    phantoms += [k for k in (*ours.params, *ours.tags) if k.endswith(".tmp")]
    run_dir = store.run_dir(run_id)
    left = [str(p) for sub in ("params", "tags", "metrics") for p in (run_dir / sub).rglob("*.tmp")]
    assert (phantoms, errors, left) == ([], [], [])


def test_temp_files_are_written_outside_the_readers_dirs(
    store_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deterministic: every temp file a param, tag or meta.yaml write makes lies outside
    params/, tags/ and metrics/ (where MLflow and mlkit list keys)."""
    store = FileStore(store_root)
    exp = store.create_experiment("e", tags={"k": "v"})
    run_id = store.create_run(exp).info.run_id
    sources: list[str] = []
    real_replace, real_link = os.replace, os.link

    def replace(src, dst, *a, **kw):
        sources.append(str(src))
        return real_replace(src, dst, *a, **kw)

    def link(src, dst, *a, **kw):
        sources.append(str(src))
        return real_link(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "link", link)
    store.log_param(run_id, "a/b", "1")
    store.log_params(run_id, {"c": "2"})
    store.set_tag(run_id, "x/y", "1")
    store.set_tags(run_id, {"z": "2"})
    store.set_experiment_tag(exp, "k2", "v")
    store.set_terminated(run_id, "FINISHED")
    assert sources
    for src in sources:
        parts = Path(src).parts
        assert not {"params", "tags", "metrics"} & set(parts[-3:-1]), src


def test_gc_and_lost_runs_remove_leftover_temp_files(store_root: Path) -> None:
    from mlkit.tracking.gc import run_gc
    from mlkit.tracking.retention import RetentionPolicy

    store = FileStore(store_root)
    run_id = store.create_run("0").info.run_id
    run_dir = store.run_dir(run_id)
    store.log_param(run_id, "lr", "1")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    old = time.time() - 3600
    stale = [
        run_dir / f".meta.yaml.{dead_pid}.1.tmp",
        run_dir / "params" / f".lr.{dead_pid}.2.tmp",  # left by an older mlkit
        run_dir / "tags" / f".note.{os.getpid()}.3.tmp",  # live pid, but old
        store_root / "0" / f".meta.yaml.{dead_pid}.4.tmp",
    ]
    fresh = run_dir / f".busy.{os.getpid()}.{time.monotonic_ns()}.tmp"  # being written now
    for path in [*stale, fresh]:
        path.write_text("x")
        os.utime(path, (time.time() - 5, time.time() - 5))  # a dead writer's: gone a moment ago
    os.utime(stale[2], (old, old))
    os.utime(fresh, None)
    result = run_gc(store, RetentionPolicy())
    assert [p for p in stale if p.exists()] == []
    assert fresh.exists()
    assert any("temp" in item.reason for item in result.items)
    assert FileStore(store_root).get_run(run_id).data.params == {"lr": "1"}


def test_lost_run_recovery_removes_its_temp_files(store_root: Path) -> None:
    from mlkit.tracking.lost import HOST_TAG, PID_TAG, hostname

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    store = FileStore(store_root)
    run_id = store.create_run("0", tags={HOST_TAG: hostname(), PID_TAG: dead.stdout.strip()}).info.run_id
    run_dir = store.run_dir(run_id)
    left = [run_dir / f".t.{dead.stdout.strip()}.1.tmp", run_dir / "tags" / f".t.{dead.stdout.strip()}.2.tmp"]
    for path in left:
        path.write_text("x")
        os.utime(path, (time.time() - 5, time.time() - 5))
    assert store.mark_lost_runs() == [run_id]
    assert [p for p in left if p.exists()] == []


@pytest.mark.mlflow
def test_terminal_status_lands_on_a_disk_that_stays_full(
    store_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No temp file can be written at all: the status still lands (rewritten in place), and
    both readers read it."""
    import errno

    from mlkit import fsio
    from mlkit.tracking import store as store_mod

    store = FileStore(store_root)
    run_id = store.create_run("0", run_name="a-rather-long-run-name-to-shrink-later").info.run_id
    store.set_tag(run_id, "mlflow.runName", "short")
    with open(store.run_dir(run_id) / "meta.yaml", "a") as fh:
        fh.write("\n" * 100)  # the new text is shorter than the file: padded, never torn

    def full(path, *_a, **_k):
        raise fsio.write_error(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))

    monkeypatch.setattr(fsio, "atomic_write", full)
    monkeypatch.setattr(store_mod, "STATUS_RETRY_DELAYS_S", (0.0, 0.0))
    store.set_terminated(run_id, "FINISHED", end_time=1796305651359)
    monkeypatch.undo()
    run = FileStore(store_root).get_run(run_id)
    assert (run.info.status, run.info.end_time, run.info.run_name) == ("FINISHED", 1796305651359, "short")
    theirs = _mlflow_client(store_root).get_run(run_id)
    assert (theirs.info.status, theirs.info.end_time) == ("FINISHED", 1796305651359)


def _half_made_runs(exp_dir: Path) -> list[str]:
    """Run directories without a meta.yaml: what a failed create_run must never leave behind."""
    return sorted(
        p.name for p in exp_dir.iterdir()
        if p.is_dir() and not p.name.startswith(".") and not (p / "meta.yaml").exists()
    )  # fmt: skip


def _registered_live(exp_dir: Path) -> set[str]:
    live = exp_dir / ".mlkit-live"
    return {p.name for p in live.iterdir() if p.name != ".all"} if live.is_dir() else set()


def test_a_run_the_full_disk_stops_leaves_no_directory(small_fs: Path) -> None:
    """create_run on a disk that fills up part-way: each failure is a one-line "disk is full",
    and leaves neither a run directory without its meta.yaml nor a live registration."""
    from mlkit.errors import StoreError

    root = small_fs / "mlruns"
    store = FileStore(root)
    exp_id = store.get_or_create_experiment("e")
    _fill(small_fs / "filler", leave=24 * 1024)
    tags = {"long": "v" * 3000, "mlkit.pid": str(os.getpid()), "mlkit.pid_start": "1.0"}
    made, errors = [], []
    for _ in range(40):
        try:
            made.append(store.create_run(exp_id, tags=tags).info.run_id)
        except StoreError as exc:
            errors.append(str(exc))
    assert made and errors, (len(made), errors[:1])  # the disk filled part-way through
    assert all("disk is full" in e and "\n" not in e for e in errors), errors[:3]
    exp_dir = root / exp_id
    assert _half_made_runs(exp_dir) == []
    assert _registered_live(exp_dir) == set(made)
    (small_fs / "filler").unlink()
    assert sorted(r.info.run_id for r in FileStore(root).search_runs([exp_id])[0]) == sorted(made)


def test_a_run_whose_meta_yaml_cannot_be_written_leaves_no_directory(
    store_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last step of create_run (meta.yaml) fails: its tags and directories go too."""
    import errno

    from mlkit import fsio
    from mlkit.errors import StoreError

    store = FileStore(store_root)
    before = set(os.listdir(store_root / "0"))

    def full(path, *_a, **_k):
        raise fsio.write_error(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))

    monkeypatch.setattr(fsio, "atomic_write", full)
    with pytest.raises(StoreError, match="disk is full"):
        store.create_run("0", tags={"mlkit.pid": str(os.getpid()), "a": "b"})
    monkeypatch.undo()
    assert set(os.listdir(store_root / "0")) - before <= {".mlkit-live"}
    assert _half_made_runs(store_root / "0") == [] and _registered_live(store_root / "0") == set()


def test_cli_run_on_a_full_disk_creates_nothing(small_fs: Path, tmp_path: Path) -> None:
    """`mlkit run` when the store's disk is already full: a one-line error, exit non-zero, and
    no run directory or live registration left for `mlkit gc` to find later."""
    project = tmp_path / "proj"
    project.mkdir()
    (project / "MLproject").write_text("name: p\nentry_points:\n  main:\n    command: python -c pass\n")
    root = small_fs / "mlruns"
    FileStore(root).close()
    _fill(small_fs / "filler", leave=2048)
    args = ("run", str(project), "--env-manager", "local", "--gpus", "none", "--store", str(root))
    for _ in range(3):
        done = run_mlkit(*args, env=trainer_env(), timeout=120)
        assert done.returncode != 0, done.stdout
        assert "disk is full" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert _half_made_runs(root / "0") == [] and _registered_live(root / "0") == set()


@pytest.mark.mlflow
def test_a_model_version_the_full_disk_stops_leaves_the_registry_readable(small_fs: Path) -> None:
    """A version (or a new model) that cannot be written whole leaves no directory without its
    meta.yaml: MLflow's registry reader fails on one. When space returns, the number is used."""
    from mlkit.errors import StoreError
    from mlkit.tracking.registry import RegistryStore

    root = small_fs / "mlruns"
    root.mkdir()
    registry = RegistryStore(root)
    registry.create_model_version("m", "runs:/abc/model")
    _fill(small_fs / "filler", leave=2048)
    big = {"note": "v" * 8000}
    for _ in range(3):
        with pytest.raises(StoreError, match="disk is full"):
            registry.create_model_version("m", "runs:/abc/model", tags=big)
        with pytest.raises(StoreError, match="disk is full"):
            registry.create_registered_model("other", tags=big)
    (small_fs / "filler").unlink()
    models = root / "models"
    assert sorted(p.name for p in (models / "m").iterdir() if p.is_dir()) == ["version-1"]
    assert not (models / "other").exists()
    client = _mlflow_client(root)
    assert [int(v.version) for v in client.search_model_versions("name='m'")] == [1]
    assert [m.name for m in client.search_registered_models()] == ["m"]
    assert registry.create_model_version("m", "runs:/abc/model", tags=big).version == 2
    assert sorted(int(v.version) for v in client.search_model_versions("name='m'")) == [1, 2]
