"""One damaged file in a store harms one run at most: bytes that are not UTF-8, or a meta.yaml
holding a time of the wrong type. Readers (search, `runs list`, `gc --dry-run`, `report`) go on
with the other runs, never with a traceback. Values are read back byte for byte, as MLflow reads
them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from second_user import AVAILABLE, WHY_NOT, as_nobody, make_box

from mlkit.tracking.store import FileStore

from helpers import run_mlkit


def _store(root: Path, n: int = 3) -> tuple[FileStore, list[str]]:
    """`n` ended runs, each with a param, a tag and a metric, written as `mlkit run` leaves them."""
    store = FileStore(root)
    ids = []
    for i in range(n):
        run_id = store.create_run(
            "0", tags={"mlkit.pid": str(os.getpid()), "mlkit.pid_start": "1.0"}
        ).info.run_id
        store.log_param(run_id, "lr", str(i))
        store.set_tag(run_id, "note", "ok")
        store.log_metric(run_id, "acc", i / 10, step=0)
        store.set_terminated(run_id, "FINISHED")
        ids.append(run_id)
    store.close()
    return store, ids


def _read_commands(root: Path, tmp_path: Path) -> None:
    """Every read command a cron job runs: each exits 0 without a traceback."""
    for args in (
        ("runs", "list"),
        ("runs", "list", "--order-by", "start_time DESC"),
        ("gc", "--dry-run"),
        ("report", "-e", "Default", "-o", str(tmp_path / "report.html")),
        ("experiments", "list"),
    ):
        done = run_mlkit(*args, "--store", str(root))
        assert done.returncode == 0 and "Traceback" not in done.stderr, (args, done.stderr[-1500:])


def test_a_value_that_is_not_utf8_spoils_nothing_else(tmp_path: Path) -> None:
    root = tmp_path / "mlruns"
    store, ids = _store(root)
    (store.run_dir(ids[0]) / "tags" / "note").write_bytes(b"caf\xe9")
    (store.run_dir(ids[1]) / "params" / "opt").write_bytes(b"\xff\xfe1")  # params are never rewritten
    runs = {r.info.run_id: r for r in FileStore(root).search_runs(["0"])[0]}
    assert set(runs) == set(ids)
    assert runs[ids[0]].data.tags["note"] == "caf\ufffd"  # shown, as the metric reader shows bad bytes
    assert runs[ids[1]].data.params == {"lr": "1", "opt": "\ufffd\ufffd1"}
    assert FileStore(root).get_run(ids[0]).data.tags["note"] == "caf\ufffd"
    _read_commands(root, tmp_path)


def test_a_meta_yaml_that_is_not_utf8_leaves_that_run_out(tmp_path: Path) -> None:
    root = tmp_path / "mlruns"
    store, ids = _store(root)
    meta = store.run_dir(ids[2]) / "meta.yaml"
    meta.write_bytes(meta.read_bytes().replace(b"user_id: ", b"user_id: caf\xe9"))
    assert sorted(r.info.run_id for r in FileStore(root).search_runs(["0"])[0]) == sorted(ids[:2])
    _read_commands(root, tmp_path)


def test_an_experiment_meta_yaml_that_is_not_utf8_does_not_stop_mlkit(tmp_path: Path) -> None:
    root = tmp_path / "mlruns"
    store, ids = _store(root)
    other = store.create_experiment("other")
    meta = root / other / "meta.yaml"
    meta.write_bytes(meta.read_bytes() + b"note: caf\xe9\n")
    assert [e.name for e in FileStore(root).list_experiments()] == ["Default"]
    _read_commands(root, tmp_path)


@pytest.mark.parametrize(
    "line", ["start_time: '1796400000000'", "start_time: soon", "end_time: abc", "end_time: [1]"]
)
def test_a_time_of_the_wrong_type_leaves_that_run_out(tmp_path: Path, line: str) -> None:
    root = tmp_path / "mlruns"
    store, ids = _store(root)
    meta = store.run_dir(ids[1]) / "meta.yaml"
    key = line.split(":")[0]
    meta.write_text(
        "".join(
            f"{line}\n" if old.startswith(f"{key}:") else old for old in meta.read_text().splitlines(True)
        )
    )
    for order in (None, ["attributes.start_time DESC"], ["attributes.end_time ASC"]):
        found = FileStore(root).search_runs(["0"], order_by=order)[0]
        assert sorted(r.info.run_id for r in found) == sorted([ids[0], ids[2]])
    _read_commands(root, tmp_path)


@pytest.mark.mlflow
def test_a_carriage_return_in_a_value_reads_back_as_mlflow_reads_it(tmp_path: Path) -> None:
    root = tmp_path / "mlruns"
    store = FileStore(root)
    run_id = store.create_run("0").info.run_id
    store.log_param(run_id, "p", "a\rb\r\n")
    store.set_tag(run_id, "t", "x\ry")
    store.log_param(run_id, "p", "a\rb\r\n")  # the same value again is no change
    store.set_terminated(run_id, "FINISHED")
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    from mlflow.tracking import MlflowClient

    theirs = MlflowClient(tracking_uri=root.as_uri()).get_run(run_id).data
    ours = FileStore(root).get_run(run_id).data
    assert (
        (ours.params["p"], ours.tags["t"]) == (theirs.params["p"], theirs.tags["t"]) == ("a\rb\r\n", "x\ry")
    )
    found = FileStore(root).search_runs(["0"], "params.p = 'a\rb\r\n' and tags.t = 'x\ry'")[0]
    assert [r.info.run_id for r in found] == [run_id]


@pytest.mark.skipif(not AVAILABLE, reason=WHY_NOT)
def test_another_users_unreadable_run_is_a_one_line_error_or_skipped() -> None:
    """On a shared store, a run directory (or one file) another user keeps to themselves: `runs
    show` of it says which file it cannot read, in one line; gc's dry run leaves it alone."""
    with make_box() as box:
        root = box / "mlruns"
        store, ids = _store(root, n=2)
        for path in [root, *root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        (store.run_dir(ids[0]) / "tags" / "note").chmod(0o600)
        store.run_dir(ids[1]).chmod(0o700)
        done = as_nobody(
            "from mlkit.errors import MlkitError\n"
            "from mlkit.tracking.store import FileStore\n"
            "from mlkit.tracking.gc import plan_gc\n"
            "from mlkit.tracking.retention import RetentionPolicy\n"
            f"store = FileStore({str(root)!r})\n"
            "try:\n"
            f"    store.get_run({ids[0]!r})\n"
            "except MlkitError as exc:\n"
            "    print('ERROR', str(exc).replace(chr(10), ' '))\n"
            "plan, _runs = plan_gc(store, RetentionPolicy(), orphans=True)\n"
            "print('GC', sorted(item.kind for item in plan.items))\n"
        )
        assert done.returncode == 0, done.stderr[-1500:]
        lines = done.stdout.splitlines()
        assert lines[0].startswith("ERROR") and "tags/note" in lines[0] and "cannot read" in lines[0], lines
        assert lines[1] == "GC []", lines


def test_a_malformed_meta_yaml_is_named_in_one_line(tmp_path: Path) -> None:
    from mlkit.errors import StoreError

    root = tmp_path / "mlruns"
    store, ids = _store(root, n=1)
    meta = store.run_dir(ids[0]) / "meta.yaml"
    meta.write_text(meta.read_text() + "status: [\n")
    with pytest.raises(StoreError) as caught:
        FileStore(root).get_run(ids[0])
    message = caught.value.message
    assert "\n" not in message and str(meta) in message and "line " in message, message
