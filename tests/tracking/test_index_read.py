"""How many runs a first search reads from their files (a store MLflow wrote, rsynced in) are read:
in the searching thread while the reading is mostly Python (files in the page cache, where threads
only pass the GIL around), by a bounded pool of threads when the first runs' reading was mostly
spent outside Python (a disk, a network file system). Either way the same runs, in the same order."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import pytest

import mlkit.tracking.index as ix
from mlkit.tracking.store import FileStore

RUNS = ix._PROBE + 40  # past the probe: the rest is read one way or the other


@pytest.fixture
def many_runs(tmp_path: Path) -> tuple[Path, list[tuple[int, str, str, str, bool]]]:
    root = tmp_path / "mlruns"
    store = FileStore(root)
    for i in range(RUNS):
        run_id = store.create_run("0", run_name=f"r{i}").info.run_id
        store.log_metric(run_id, "acc", i / RUNS)
    store.close()
    runs = sorted(p for p in (root / "0").iterdir() if p.is_dir() and len(p.name) == 32)
    (runs[5] / "meta.yaml").unlink(missing_ok=True)  # a run without meta.yaml: skipped, as MLflow does
    return root, [(i, str(p), p.name, "0", False) for i, p in enumerate(runs)]


class _Clocks:
    """The probe's two readings: `wall` seconds of wall clock for `user` seconds of user CPU."""

    def __init__(self, wall: float, user: float) -> None:
        self._walls, self._users = iter([0.0, wall]), iter([0.0, user])

    def perf_counter(self) -> float:
        return next(self._walls)

    def user_seconds(self) -> float:
        return next(self._users)

    def __getattr__(self, name: str):  # time_ns and the rest: the real clock
        return getattr(time, name)


def _read(monkeypatch, todo, wall: float, user: float) -> tuple[list, list[int]]:
    clocks = _Clocks(wall, user)
    monkeypatch.setattr(ix, "time", clocks)
    monkeypatch.setattr(ix, "_user_seconds", clocks.user_seconds)
    pools: list[int] = []
    real_pool = concurrent.futures.ThreadPoolExecutor

    class CountingPool(real_pool):  # type: ignore[misc,valid-type]
        def __init__(self, max_workers=None, **kwargs):
            pools.append(max_workers)
            super().__init__(max_workers=max_workers, **kwargs)

    monkeypatch.setattr(concurrent.futures, "ThreadPoolExecutor", CountingPool)
    return ix._read_runs(todo, {}, time.time_ns()), pools


def _summary(runs) -> list:
    return [
        None if r is None else (r.run_id, r.info["run_name"], r.values[("metric", "acc")][0]) for r in runs
    ]


def test_reading_that_is_mostly_python_stays_in_this_thread(many_runs, monkeypatch):
    _root, todo = many_runs
    runs, pools = _read(monkeypatch, todo, wall=1.2, user=1.0)
    assert pools == []  # no thread started
    assert len(runs) == RUNS and runs[5] is None and sum(r is None for r in runs) == 1
    assert [r.run_id for r in runs if r is not None] == [t[2] for t in todo if t[2] != todo[5][2]]


def test_reading_that_waited_goes_on_in_a_bounded_pool_with_the_same_answer(many_runs, monkeypatch):
    _root, todo = many_runs
    alone, _ = _read(monkeypatch, todo, wall=1.0, user=1.0)
    pooled, pools = _read(monkeypatch, todo, wall=3.0, user=1.0)  # 3x: mostly the kernel or waiting
    assert pools == [ix.READ_THREADS]
    assert _summary(pooled) == _summary(alone)  # the same runs, values and order


def test_a_first_search_of_a_store_without_cache_finds_every_run(many_runs):
    root, todo = many_runs
    (root / ix.INDEX_FILE).unlink(missing_ok=True)
    found, _ = FileStore(root).search_runs(["0"], "metrics.acc >= 0", max_results=1000)
    assert len(found) == RUNS - 1
