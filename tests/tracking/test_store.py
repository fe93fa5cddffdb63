"""The file store on real files: layout, validation, immutability, torn lines, moves."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from mlkit.errors import InvalidInputError, NotFoundError, StoreError
from mlkit.tracking.files import load_yaml_text
from mlkit.tracking.store import FileStore


@pytest.fixture
def store(store_root: Path) -> FileStore:
    return FileStore(store_root)


def _files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def test_new_store_has_default_experiment_and_trash(store: FileStore, store_root: Path) -> None:
    meta = load_yaml_text((store_root / "0" / "meta.yaml").read_text())
    assert meta["name"] == "Default" and meta["experiment_id"] == "0"
    assert meta["artifact_location"] == (store_root / "0").as_uri()
    assert (store_root / ".trash").is_dir()
    assert [e.name for e in store.list_experiments()] == ["Default"]


def test_run_layout_matches_mlflow(store: FileStore, store_root: Path) -> None:
    exp = store.create_experiment("layout")
    assert re.fullmatch(r"[1-9]\d{17}", exp), exp  # MLflow's 18-digit ids
    run = store.create_run(exp, run_name="r1", tags={"mlflow.user": "alice"})
    run_id = run.info.run_id
    store.log_param(run_id, "lr", 0.01)
    store.log_metric(run_id, "loss", 1, step=0, timestamp=1000)
    store.log_metric(run_id, "loss", 0.25, step=1, timestamp=1001)
    store.log_metric(run_id, "acc/top1", float("nan"), step=2, timestamp=1002)
    store.set_tag(run_id, "note", "a\nb")
    store.set_terminated(run_id, "FINISHED", end_time=5000)
    run_dir = store_root / exp / run_id
    assert {"meta.yaml", "metrics", "params", "tags", "artifacts"} <= set(os.listdir(run_dir))
    assert (run_dir / "metrics" / "loss").read_text() == "1000 1.0 0\n1001 0.25 1\n"
    assert (run_dir / "metrics" / "acc" / "top1").read_text() == "1002 nan 2\n"
    assert (run_dir / "params" / "lr").read_text() == "0.01"
    assert (run_dir / "tags" / "note").read_text() == "a\nb"
    meta_text = (run_dir / "meta.yaml").read_text()
    meta = load_yaml_text(meta_text)
    assert meta["run_uuid"] == meta["run_id"] == run_id
    assert meta["status"] == 3 and meta["end_time"] == 5000 and meta["source_type"] == 4
    assert meta["user_id"] == "alice" and meta["run_name"] == "r1" and meta["tags"] == []
    assert meta["artifact_uri"] == f"{(store_root / exp).as_uri()}/{run_id}/artifacts"
    assert meta_text.splitlines() == sorted(meta_text.splitlines())  # keys sorted as MLflow writes them
    got = store.get_run(run_id)
    assert got.data.metrics["loss"] == 0.25 and got.data.params == {"lr": "0.01"}
    assert got.info.status == "FINISHED" and got.data.tags["mlflow.runName"] == "r1"
    assert [m.value for m in store.get_metric_history(run_id, "loss")] == [1.0, 0.25]


def test_params_are_immutable(store: FileStore) -> None:
    run_id = store.create_run("0").info.run_id
    store.log_param(run_id, "lr", "0.1")
    store.log_param(run_id, "lr", "0.1")  # same value again is fine
    with pytest.raises(InvalidInputError, match="lr.*0.1.*0.2"):
        store.log_param(run_id, "lr", "0.2")
    assert store.get_run(run_id).data.params == {"lr": "0.1"}


def test_long_param_values_are_truncated_like_mlflow(store: FileStore) -> None:
    run_id = store.create_run("0").info.run_id
    store.log_param(run_id, "long", "x" * 6001)
    assert len(store.get_run(run_id).data.params["long"]) == 6000


@pytest.mark.parametrize(
    "key", ["../x", "/abs", "a/../../b", "a//b", "a/./b", "", "x\x00y", "tab\there", "a/"]
)
@pytest.mark.parametrize("kind", ["metric", "param", "tag"])
def test_hostile_keys_are_refused_and_nothing_escapes(
    store: FileStore, store_root: Path, key: str, kind: str
) -> None:
    run_id = store.create_run("0").info.run_id
    outside = store_root.parent
    before = _files_under(outside)
    with pytest.raises(InvalidInputError):
        if kind == "metric":
            store.log_metric(run_id, key, 1.0)
        elif kind == "param":
            store.log_param(run_id, key, "v")
        else:
            store.set_tag(run_id, key, "v")
    assert _files_under(outside) == before
    assert store.get_run(run_id).info.run_id == run_id  # still readable


@pytest.mark.parametrize("artifact_path", ["../x", "/abs", "a/../../b", "x\x00y", ".."])
def test_artifact_paths_cannot_leave_the_run(store: FileStore, tmp_path: Path, artifact_path: str) -> None:
    run_id = store.create_run("0").info.run_id
    src = tmp_path / "f.txt"
    src.write_text("hi")
    before = _files_under(tmp_path)
    with pytest.raises(InvalidInputError):
        store.log_artifact(run_id, src, artifact_path)
    with pytest.raises(InvalidInputError):
        store.artifact_file(run_id, artifact_path)
    assert _files_under(tmp_path) == before


def test_symlink_out_of_artifacts_is_refused(store: FileStore, tmp_path: Path) -> None:
    run_id = store.create_run("0").info.run_id
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.artifact_dir(run_id) / "link").symlink_to(outside)
    src = tmp_path / "f.txt"
    src.write_text("hi")
    with pytest.raises(InvalidInputError, match="outside"):
        store.log_artifact(run_id, src, "link")
    assert not (outside / "f.txt").exists()


def test_torn_last_line_is_skipped_and_repaired_on_append(store: FileStore) -> None:
    run_id = store.create_run("0").info.run_id
    path = store.run_dir(run_id) / "metrics" / "loss"
    path.write_bytes(b"1000 0.5 0\n1001 0.4 1\n1002 0.3")  # a writer died mid-line
    assert [m.step for m in store.get_metric_history(run_id, "loss")] == [0, 1]
    assert store.get_run(run_id).data.metrics["loss"] == 0.4
    store.log_metric(run_id, "loss", 0.2, step=2, timestamp=1003)
    store.close()
    assert path.read_bytes() == b"1000 0.5 0\n1001 0.4 1\n1003 0.2 2\n"


def test_malformed_interior_line_is_an_error(store: FileStore) -> None:
    run_id = store.create_run("0").info.run_id
    (store.run_dir(run_id) / "metrics" / "bad").write_bytes(b"1000 0.5 0\nnot a metric line\n")
    with pytest.raises(StoreError, match="line 2"):
        store.get_metric_history(run_id, "bad")


def test_metric_value_checks(store: FileStore) -> None:
    run_id = store.create_run("0").info.run_id
    with pytest.raises(InvalidInputError):
        store.log_metric(run_id, "m", "0.5")
    with pytest.raises(InvalidInputError):
        store.log_metric(run_id, "m", 0.5, timestamp=-1)
    store.log_metric(run_id, "m", True)
    store.log_metric(run_id, "m", 3, step=1)
    store.close()
    assert [m.value for m in store.get_metric_history(run_id, "m")] == [1.0, 3.0]


def test_experiment_names_unique_including_deleted(store: FileStore) -> None:
    exp = store.create_experiment("dup")
    with pytest.raises(InvalidInputError, match="already exists"):
        store.create_experiment("dup")
    assert store.get_or_create_experiment("dup") == exp
    store.delete_experiment(exp)
    assert store.get_experiment(exp).lifecycle_stage == "deleted"
    with pytest.raises(InvalidInputError, match="deleted"):
        store.create_experiment("dup")
    store.restore_experiment(exp)
    assert store.get_experiment(exp).lifecycle_stage == "active"
    with pytest.raises(InvalidInputError):
        store.delete_experiment("0")


def test_delete_experiment_moves_it_to_trash_and_marks_runs(store: FileStore, store_root: Path) -> None:
    exp = store.create_experiment("gone")
    run_id = store.create_run(exp).info.run_id
    store.delete_experiment(exp)
    assert (store_root / ".trash" / exp / run_id).is_dir() and not (store_root / exp).exists()
    assert store.get_run(run_id).info.lifecycle_stage == "deleted"
    store.restore_experiment(exp)
    assert store.get_run(run_id).info.lifecycle_stage == "active"


def test_delete_and_restore_run(store: FileStore) -> None:
    run_id = store.create_run("0").info.run_id
    store.delete_run(run_id)
    meta = load_yaml_text((store.run_dir(run_id) / "meta.yaml").read_text())
    assert meta["lifecycle_stage"] == "deleted" and meta["deleted_time"] > 0
    with pytest.raises(InvalidInputError, match="deleted"):
        store.log_param(run_id, "a", "1")
    store.restore_run(run_id)
    assert "deleted_time" not in load_yaml_text((store.run_dir(run_id) / "meta.yaml").read_text())
    store.log_param(run_id, "a", "1")


def test_missing_run_and_experiment_are_not_found(store: FileStore) -> None:
    with pytest.raises(NotFoundError):
        store.get_run("0" * 32)
    with pytest.raises(NotFoundError):
        store.get_experiment("12345")
    with pytest.raises(InvalidInputError):
        store.get_run("../../etc")


def test_run_id_prefix_resolution(store: FileStore) -> None:
    run_id = store.create_run("0").info.run_id
    assert store.resolve_run_id(run_id[:6]) == run_id
    with pytest.raises(NotFoundError, match="at least 6"):
        store.resolve_run_id(run_id[:3])


def test_moved_store_still_resolves_artifacts(store: FileStore, store_root: Path, tmp_path: Path) -> None:
    exp = store.create_experiment("moving")
    run_id = store.create_run(exp).info.run_id
    src = tmp_path / "model.txt"
    src.write_text("weights")
    store.log_artifact(run_id, src, "model")
    store.close()
    moved = tmp_path / "elsewhere" / "mlruns"
    shutil.copytree(store_root, moved)
    shutil.rmtree(store_root)
    other = FileStore(moved)
    run = other.get_run(run_id)
    assert run.info.artifact_uri == (moved / exp / run_id / "artifacts").as_uri()
    assert (other.artifact_dir(run_id) / "model" / "model.txt").read_text() == "weights"
    assert [a.path for a in other.list_artifacts(run_id, "model")] == ["model/model.txt"]
    assert other.get_experiment(exp).artifact_location == (moved / exp).as_uri()
    found, _ = other.search_runs([exp])
    assert found[0].info.artifact_uri == run.info.artifact_uri
    # a new run in the moved store points at the new place
    new = other.create_run(exp)
    assert new.info.artifact_uri.startswith(moved.as_uri())


def test_run_name_tag_renames_run(store: FileStore) -> None:
    run_id = store.create_run("0", run_name="first").info.run_id
    store.set_tag(run_id, "mlflow.runName", "second")
    assert store.get_run(run_id).info.run_name == "second"
    store.delete_tag(run_id, "mlflow.runName")
    with pytest.raises(NotFoundError):
        store.delete_tag(run_id, "nope")


@pytest.mark.parametrize("name", ["plain", "a b", "a%20b", ".hidden", "ünï"])
def test_searched_runs_artifact_uri_is_mlflows_form_wherever_the_store_is(tmp_path: Path, name: str) -> None:
    """search_runs takes a string comparison for plain paths and pathlib for the rest: both give
    the URI MLflow writes (quoted where the path needs it), here and after the store moved."""
    root = tmp_path / name / "mlruns"
    first = FileStore(root)
    run_id = first.create_run("0").info.run_id
    first.close()
    for where in (root, tmp_path / name / "moved"):
        if where != root:
            shutil.move(root, where)
        store = FileStore(where)
        found, _ = store.search_runs(["0"])
        expected = (where / "0" / run_id / "artifacts").as_uri()
        assert found[0].info.artifact_uri == store.get_run(run_id).info.artifact_uri == expected
        store.close()
