"""The newest runs (`mlkit runs list`: no filter, MLflow's default order) are answered from the
cache's order, checking only the runs shown, not every run of the store (issue 20: 100,000 runs).
The answer must be the one the full search gives, whatever happened to the files since."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mlkit.tracking import index as index_module
from mlkit.tracking.store import FileStore

T0 = 1_700_000_000_000


def _ids(runs) -> list[str]:
    return [r.info.run_id for r in runs]


def _both(store: FileStore, exp_ids: list[str], max_results: int, view: str, token=None):
    fast = store.search_runs(exp_ids, "", None, max_results=max_results, run_view=view, page_token=token)
    full = store.search_runs(
        exp_ids, "", ["attributes.start_time DESC"], max_results=max_results, run_view=view, page_token=token
    )
    return fast, full


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    store = FileStore(tmp_path / "mlruns")
    exp = store.create_experiment("b")
    for i in range(40):  # ties in start time: the run id decides, as in MLflow
        run = store.create_run("0" if i % 2 else exp, start_time=T0 + (i // 3) * 1000, run_name=f"r{i}")
        store.log_param(run.info.run_id, "i", str(i))
        if i % 5 == 0:
            store.set_terminated(run.info.run_id, "FINISHED")
        if i % 7 == 0:
            store.delete_run(run.info.run_id)
    return store


def test_the_newest_runs_are_the_full_searchs_answer_after_every_kind_of_change(store: FileStore) -> None:
    exps = ["0", store.get_experiment_by_name("b").experiment_id]
    store.search_runs(exps, "params.i != 'x'")  # warm the cache
    newest = _ids(store.search_runs(exps, "", None, max_results=3)[0])
    # changes the cache does not know of yet: a new run, a run ended and renamed in place (as
    # MLflow writes meta.yaml), a run deleted, a deleted run restored, a run removed from disk
    store.create_run("0", start_time=T0 + 5500, run_name="late")
    meta = store.run_dir(newest[0]) / "meta.yaml"
    meta.write_text(meta.read_text().replace("status: 1", "status: 4").replace("run_name: ", "run_name: x"))
    store.delete_run(newest[1])
    deleted = _ids(store.search_runs(exps, "", None, run_view="deleted")[0])
    store.restore_run(deleted[0])
    shutil.rmtree(store.run_dir(newest[2]))
    for view in ("active", "deleted", "all"):
        for k in (1, 2, 5, 17, 1000):
            fast, full = _both(store, exps, k, view)
            assert _ids(fast[0]) == _ids(full[0]), (view, k)
            assert fast[1] == full[1], (view, k)  # the next page's token
            assert [(r.info, r.data) for r in fast[0]] == [(r.info, r.data) for r in full[0]]
            if fast[1]:
                again_fast, again_full = _both(store, exps, k, view, fast[1])
                assert _ids(again_fast[0]) == _ids(again_full[0])


def test_a_shown_run_whose_start_time_moved_falls_back_to_the_full_search(store: FileStore) -> None:
    """MLflow has no call that changes a run's start time; a hand edit that moves one of the runs
    about to be shown is noticed, and the full search answers."""
    store.search_runs("0", "params.i != 'x'")
    newest = _ids(store.search_runs("0", "", None, max_results=1)[0])[0]
    meta = store.run_dir(newest) / "meta.yaml"
    text = meta.read_text()
    start = next(line for line in text.splitlines() if line.startswith("start_time:"))
    meta.write_text(text.replace(start, f"start_time: {T0 - 99_000}"))  # now the oldest
    fast, full = _both(store, ["0"], 3, "active")
    assert _ids(fast[0]) == _ids(full[0]) and newest not in _ids(fast[0])
    assert _ids(store.search_runs("0", "", None, max_results=50)[0])[-1] == newest


def test_only_the_runs_shown_are_checked(tmp_path: Path, monkeypatch) -> None:
    store = FileStore(tmp_path / "mlruns")
    for i in range(300):
        store.create_run("0", start_time=T0 + i)
    store.search_runs("0", "attributes.status = 'RUNNING'")  # warm
    checked: list[str] = []
    real = index_module.file_sig
    monkeypatch.setattr(index_module, "file_sig", lambda path: checked.append(path) or real(path))
    runs, token = store.search_runs("0", "", None, max_results=5)
    assert len(runs) == 5 and token
    assert 0 < len(checked) <= 6 * 5  # the shown runs (and the one after), not 300


def test_a_search_leaves_the_cycle_collector_as_it_found_it(store: FileStore) -> None:
    import gc

    from mlkit.errors import InvalidInputError

    assert gc.isenabled()
    store.search_runs("0", "params.i = '3'")
    assert gc.isenabled()
    with pytest.raises(InvalidInputError):
        store.search_runs("0", "params.i ~ 3")
    assert gc.isenabled()
    gc.disable()
    try:
        store.search_runs("0", "")
        assert not gc.isenabled()
    finally:
        gc.enable()
