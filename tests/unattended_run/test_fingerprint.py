"""compute_fingerprint: what changes it and what does not; find_finished_run against a real store."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mlkit.runner.fingerprint import (
    compute_fingerprint,
    find_finished_run,
    project_content_hash,
    project_files,
)
from mlkit.tracking.store import FileStore

PARAMS = {"lr": "0.1", "epochs": "3"}


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    directory = tmp_path / "proj"
    (directory / "src").mkdir(parents=True)
    (directory / "MLproject").write_text("entry_points:\n  main:\n    command: python train.py\n")
    (directory / "train.py").write_text("print('train')\n")
    (directory / "src" / "model.py").write_text("X = 1\n")
    return directory


def fp(directory: Path, entry: str = "main", params: dict | None = None, env: str | None = "env1") -> str:
    return compute_fingerprint(directory, entry, PARAMS if params is None else params, env)


def test_stable_and_hex(proj: Path) -> None:
    first = fp(proj)
    assert first == fp(proj) and len(first) == 64 and int(first, 16) >= 0
    assert fp(proj, params={"epochs": "3", "lr": "0.1"}) == first  # order of params does not count


@pytest.mark.parametrize(
    "change",
    [
        lambda d: (d / "train.py").write_text("print('changed')\n"),
        lambda d: (d / "src" / "model.py").write_text("X = 2\n"),
        lambda d: (d / "src" / "new.py").write_text(""),
        lambda d: (d / "src" / "model.py").rename(d / "src" / "renamed.py"),
        lambda d: (d / "src" / "model.py").unlink(),
        lambda d: (d / ".gitignore").write_text("*.log\n"),
    ],
    ids=["edit", "edit-nested", "add", "rename", "delete", "add-gitignore"],
)
def test_code_change_changes_it(proj: Path, change) -> None:
    before = fp(proj)
    change(proj)
    assert fp(proj) != before


def test_param_entry_point_and_env_changes_change_it(proj: Path) -> None:
    before = fp(proj)
    assert fp(proj, params={"lr": "0.2", "epochs": "3"}) != before
    assert fp(proj, params={"lr": "0.1"}) != before
    assert fp(proj, params={**PARAMS, "extra": ""}) != before
    assert fp(proj, entry="other") != before
    assert fp(proj, env="env2") != before
    assert fp(proj, env=None) != before
    # key=value joins cannot collide across keys
    assert fp(proj, params={"a": "b=c"}) != fp(proj, params={"a=b": "c"})


def test_caches_stores_and_vcs_do_not_count(proj: Path) -> None:
    before = fp(proj)
    for rel in [
        "mlruns/0/meta.yaml",
        "mlruns/0/abc/metrics/loss",
        "__pycache__/train.cpython-311.pyc",
        "src/__pycache__/model.cpython-311.pyc",
        "src/stray.pyc",
        ".git/HEAD",
        ".ipynb_checkpoints/nb-checkpoint.ipynb",
        ".venv/bin/python",
    ]:
        (proj / rel).parent.mkdir(parents=True, exist_ok=True)
        (proj / rel).write_text(str(time.time()))
    assert fp(proj) == before
    (proj / "mlruns" / "0" / "meta.yaml").write_text("changed")
    assert fp(proj) == before


def test_gitignore_patterns(proj: Path) -> None:
    (proj / ".gitignore").write_text("# outputs\n*.log\n/outputs/\ncheckpoints\ndata/**/*.tmp\n!keep.log\n")
    base = fp(proj)
    for rel in [
        "run.log",
        "src/deep/x.log",
        "outputs/a.bin",
        "src/checkpoints/c.pt",
        "checkpoints",
        "data/a/b/x.tmp",
    ]:
        (proj / rel).parent.mkdir(parents=True, exist_ok=True)
        (proj / rel).write_text("noise")
    assert fp(proj) == base
    files = project_files(proj)
    assert "run.log" not in files and "outputs/a.bin" not in files
    (proj / "keep.log").write_text("re-included by !keep.log")
    assert fp(proj) != base
    (proj / "src" / "outputs").mkdir()
    (proj / "src" / "outputs" / "y.txt").write_text("anchored /outputs/ only matches at the root")
    assert "src/outputs/y.txt" in project_files(proj)


def test_symlinks_count_as_their_target_path(proj: Path, tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.mkdir()
    (big / "data.bin").write_bytes(b"x" * 10)
    (proj / "data").symlink_to(big)
    before = project_content_hash(proj)
    (big / "data.bin").write_bytes(b"y" * 10)  # content behind a linked directory is not walked
    assert project_content_hash(proj) == before
    (proj / "data").unlink()
    (proj / "data").symlink_to(tmp_path)
    assert project_content_hash(proj) != before


def test_find_finished_run(proj: Path, store_root: Path) -> None:
    store = FileStore(store_root)
    exp = store.create_experiment("nightly")
    other_exp = store.create_experiment("other")
    mark = fp(proj)
    tags = {"mlkit.fingerprint": mark}
    assert find_finished_run(store, exp, mark) is None

    running = store.create_run(exp, tags=tags, start_time=1000)
    failed = store.create_run(exp, tags=tags, start_time=2000)
    store.set_terminated(failed.info.run_id, "FAILED")
    elsewhere = store.create_run(other_exp, tags=tags, start_time=3000)
    store.set_terminated(elsewhere.info.run_id, "FINISHED")
    different = store.create_run(exp, tags={"mlkit.fingerprint": fp(proj, env="other")}, start_time=4000)
    store.set_terminated(different.info.run_id, "FINISHED")
    assert running.info.status == "RUNNING"
    assert find_finished_run(store, exp, mark) is None

    old = store.create_run(exp, tags=tags, start_time=5000)
    store.set_terminated(old.info.run_id, "FINISHED")
    new = store.create_run(exp, tags=tags, start_time=6000)
    store.set_terminated(new.info.run_id, "FINISHED")
    found = find_finished_run(store, exp, mark)
    assert found is not None and found.info.run_id == new.info.run_id

    store.delete_run(new.info.run_id)
    found = find_finished_run(store, exp, mark)
    assert found is not None and found.info.run_id == old.info.run_id
    assert find_finished_run(store, exp, "x' or '1'='1") is None
