"""Keys the store takes are keys MLflow reads back: bad names and file/directory collisions are
refused with InvalidInputError before anything is written, and MLflow still reads the experiment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlkit.errors import InvalidInputError
from mlkit.tracking.store import FileStore

BAD_KEYS = [
    "loss\n",  # `$` matches before a trailing newline: MLflow 3.18 uses fullmatch
    "lo\nss",
    "loss\r",
    "a\tb",
    "nul\x00",
    "bell\x07",
    "../x",
    "a/../b",
    "..",
    "/abs",
    "a//b",
    "x" * 251,
    "é" * 200,  # 400 bytes: longer than a file name may be
    "",
]


def _kinds(store: FileStore, run_id: str):
    return {
        "metric": lambda k: store.log_metric(run_id, k, 1.0),
        "metrics": lambda k: store.log_metrics(run_id, {"ok": 1.0, k: 2.0}),
        "param": lambda k: store.log_param(run_id, k, "v"),
        "params": lambda k: store.log_params(run_id, {"ok": "v", k: "v"}),
        "tag": lambda k: store.set_tag(run_id, k, "v"),
        "tags": lambda k: store.set_tags(run_id, {"ok": "v", k: "v"}),
    }


def _files_under(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


@pytest.mark.mlflow
def test_bad_keys_are_refused_and_mlflow_still_reads(
    store_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileStore(store_root)
    run_id = store.create_run("0", run_name="keys").info.run_id
    run_dir = store.run_dir(run_id)
    before = {sub: _files_under(run_dir / sub) for sub in ("metrics", "params", "tags")}
    for kind, log in _kinds(store, run_id).items():
        for key in BAD_KEYS:
            with pytest.raises(InvalidInputError):
                log(key)
            after = {sub: _files_under(run_dir / sub) for sub in ("metrics", "params", "tags")}
            assert after == before, (kind, key)  # nothing written, not even the good key of a batch
    with pytest.raises(InvalidInputError):
        store.create_run("0", tags={"bad\n": "v"})
    with pytest.raises(InvalidInputError):
        store.set_experiment_tag("0", "bad\n", "v")
    with pytest.raises(InvalidInputError):
        store.create_experiment("with-bad-tag", tags={"bad\n": "v"})
    store.close()

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store_root.as_uri())
    assert client.get_run(run_id).info.run_name == "keys"
    assert [r.info.run_id for r in client.search_runs(["0"])] == [run_id]
    assert [e.name for e in client.search_experiments()] == ["Default"]


def test_key_limits_match_mlflow() -> None:
    from mlkit.tracking.validation import MAX_KEY_LENGTH, validate_key

    assert MAX_KEY_LENGTH == 250
    assert validate_key("x" * 250, "param") == "x" * 250
    for good in ("loss", "acc/top1", "a b:c-d.e", "ünï", "a..b"):
        assert validate_key(good, "metric") == good
    with pytest.raises(InvalidInputError, match="param"):
        validate_key("lr\n", "param")


@pytest.mark.parametrize("first, second", [("a", "a/b"), ("a/b", "a"), ("a/b/c", "a/b"), ("a", "a/b/c")])
@pytest.mark.parametrize("kind", ["metric", "param", "tag"])
def test_file_directory_collisions_are_clean_errors(
    store_root: Path, kind: str, first: str, second: str
) -> None:
    store = FileStore(store_root)
    run_id = store.create_run("0").info.run_id
    log = _kinds(store, run_id)[kind]
    log(first)
    with pytest.raises(InvalidInputError, match="collides|already"):
        log(second)
    store.close()
    run = FileStore(store_root).get_run(run_id)
    data = {"metric": run.data.metrics, "param": run.data.params, "tag": run.data.tags}[kind]
    assert first in data and second not in data


@pytest.mark.parametrize("kind", ["params", "tags", "metrics"])
def test_collision_inside_one_batch_writes_nothing(store_root: Path, kind: str) -> None:
    store = FileStore(store_root)
    run_id = store.create_run("0").info.run_id
    run_dir = store.run_dir(run_id)
    before = _files_under(run_dir)
    with pytest.raises(InvalidInputError):
        _kinds(store, run_id)[kind]("ok/b")  # 'ok' and 'ok/b' in one batch
    assert _files_under(run_dir) == before


def test_registry_alias_and_name_use_fullmatch(store_root: Path) -> None:
    from mlkit.tracking.registry_validation import validate_alias, validate_model_name

    for alias in ("prod\n", "prod\r", "v1\n", "a b"):
        with pytest.raises(InvalidInputError):
            validate_alias(alias)
    assert validate_alias("champion-2") == "champion-2"
    for name in ("cnn\n", "cnn\x07x", "a\tb"):
        with pytest.raises(InvalidInputError):
            validate_model_name(name)


def test_temp_file_like_keys_are_refused() -> None:
    """A key that looks like the store's own temp files could be taken for one (and cleaned up)."""
    from mlkit.tracking.validation import validate_key

    with pytest.raises(InvalidInputError):
        validate_key(f".lr.{os.getpid()}.123.tmp", "param")
    with pytest.raises(InvalidInputError):
        validate_key(f"a/.lr.{os.getpid()}.123.tmp", "tag")
