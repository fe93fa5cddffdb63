"""A metric file with a malformed line (not a torn last line, which is skipped) cannot be read by
MLflow either: a search says which file and line, instead of leaving the run out of its answer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlkit.errors import StoreError
from mlkit.tracking.store import FileStore


def _store_with_a_bad_line(root: Path) -> tuple[FileStore, str, Path]:
    store = FileStore(root)
    ids = []
    for i in range(3):
        run_id = store.create_run("0").info.run_id
        store.log_metric(run_id, "acc", 0.5 + i / 10, step=0)
        store.log_metric(run_id, "acc", 0.6 + i / 10, step=1)
        store.set_terminated(run_id, "FINISHED")
        ids.append(run_id)
    store.close()
    path = store.run_dir(ids[1]) / "metrics" / "acc"
    lines = path.read_text().splitlines(True)
    with open(path, "a") as fh:  # appended, as metric files only grow: a bad line, then a good one
        fh.write("not a metric line\n" + lines[1])
    return store, ids[1], path


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
def test_a_search_names_the_malformed_line_instead_of_dropping_the_run(tmp_path: Path, warm: bool) -> None:
    root = tmp_path / "mlruns"
    if warm:  # the cache holds the run from before the line went bad
        store = FileStore(root)
        for _ in range(3):
            run_id = store.create_run("0").info.run_id
            store.log_metric(run_id, "acc", 0.9)
        store.search_runs("0", "metrics.acc > 0")
    store, bad_run, path = _store_with_a_bad_line(root)
    for query in ("metrics.acc > 0", ""):
        with pytest.raises(StoreError) as caught:
            FileStore(root).search_runs("0", query)
        assert str(path) in caught.value.message and "line 3 is malformed" in caught.value.message
        assert "fix or delete that line" in (caught.value.hint or "")


def test_runs_list_says_it_in_one_line(tmp_path: Path) -> None:
    root = tmp_path / "mlruns"
    _store_with_a_bad_line(root)
    out = subprocess.run(
        [sys.executable, "-m", "mlkit", "runs", "list", "--store", str(root)],
        capture_output=True, text=True, env={**os.environ, "MLKIT_TRACEBACK": ""},
    )  # fmt: skip
    assert out.returncode != 0
    assert out.stderr.startswith("Error: ") and "line 3 is malformed" in out.stderr
    assert "Traceback" not in out.stderr
