"""The search cache stays a cache on a shared store where other users can write the store root
and their own experiment folders: a planted `.mlkit-index.sqlite` (a link to someone's database,
a file that is not ours), a journal line of the wrong shape or with SQL in it, a journal that
speaks for another experiment's runs or is another user's: the answer comes from the files and
nothing outside the cache is touched."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from mlkit.tracking.index import INDEX_FILE, RunIndex
from mlkit.tracking.runsummary import JOURNAL_FILE, entry_of, read_run
from mlkit.tracking.store import FileStore

NOBODY = 65534


def _runs(root: Path, name: str = "hostile") -> tuple[str, str, str]:
    """(experiment id, a FINISHED run with lr=0.01, a RUNNING run with lr=0.1)."""
    store = FileStore(root)
    try:
        exp = store.get_or_create_experiment(name)
        done = store.create_run(exp, run_name="done").info.run_id
        store.log_params(done, {"lr": "0.01"})
        store.log_metrics(done, {"acc": 0.9}, step=0)
        store.set_terminated(done, "FINISHED")
        live = store.create_run(exp, run_name="live").info.run_id
        store.log_params(live, {"lr": "0.1"})
        return exp, done, live
    finally:
        store.close()


def _search(root: Path, exps: list[str], filter_string: str = "") -> dict[str, tuple[str, dict[str, str]]]:
    store = FileStore(root)
    try:
        runs = store.search_runs(exps, filter_string, max_results=1000)[0]
        return {r.info.run_id: (r.info.status, dict(r.data.params)) for r in runs}
    finally:
        store.close()


def _foreign_db(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE runs (run_uuid TEXT, status TEXT)")
    conn.execute("INSERT INTO runs VALUES ('alice-run', 'FINISHED')")
    conn.commit()
    conn.close()


def _foreign_rows(path: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        assert tables == ["runs"], tables  # no table dropped, none of ours added
        return conn.execute("SELECT run_uuid, status FROM runs").fetchall()
    finally:
        conn.close()


def _forged(root: Path, exp: str, run_id: str) -> dict:
    """A whole, well-formed journal entry for a run, with matching signatures, that lies: the run
    FINISHED with lr=9.9."""
    entry = entry_of(read_run(str(root / exp / run_id), run_id, exp, {}, None))
    entry["info"]["status"] = "FINISHED"
    entry["values"] = [[k, key, "9.9" if key == "lr" else v, s, x] for k, key, v, s, x in entry["values"]]
    return entry


def _append(journal: Path, *entries: object) -> None:
    with open(journal, "a", encoding="utf-8") as fh:
        for entry in entries:
            fh.write((entry if isinstance(entry, str) else json.dumps(entry)) + "\n")


def test_a_cache_linked_to_another_database_is_never_opened(store_root: Path, tmp_path: Path) -> None:
    exp, done, live = _runs(store_root)
    alice = tmp_path / "alice-mlflow.db"
    _foreign_db(alice)
    (store_root / INDEX_FILE).symlink_to(alice)
    assert _search(store_root, [exp]) == {
        done: ("FINISHED", {"lr": "0.01"}),
        live: ("RUNNING", {"lr": "0.1"}),
    }
    assert _search(store_root, [exp], "params.lr = '0.1'") == {live: ("RUNNING", {"lr": "0.1"})}
    assert _foreign_rows(alice) == [("alice-run", "FINISHED")]
    assert (store_root / INDEX_FILE).is_symlink()


def test_a_database_that_is_not_ours_is_left_alone(store_root: Path) -> None:
    """A regular file of ours by owner, but with tables and no schema row of ours: not dropped."""
    exp, done, live = _runs(store_root)
    _foreign_db(store_root / INDEX_FILE)
    assert _search(store_root, [exp]) == {
        done: ("FINISHED", {"lr": "0.01"}),
        live: ("RUNNING", {"lr": "0.1"}),
    }
    assert _foreign_rows(store_root / INDEX_FILE) == [("alice-run", "FINISHED")]


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_cache_owned_by_another_user_is_not_used(store_root: Path) -> None:
    exp, done, live = _runs(store_root)
    _search(store_root, [exp])  # our cache, with the journal folded in
    cache = store_root / INDEX_FILE
    for suffix in ("-wal", "-shm"):
        Path(f"{cache}{suffix}").unlink(missing_ok=True)
    # someone else's cache that says the live run FINISHED with lr=9.9
    conn = sqlite3.connect(cache)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("UPDATE runs SET status = 'FINISHED' WHERE run_id = ?", (live,))
    conn.execute("UPDATE kv SET value = '9.9' WHERE run_id = ? AND kind = 'param'", (live,))
    conn.commit()
    conn.close()
    os.chown(cache, NOBODY, NOBODY)
    before = cache.read_bytes()
    assert _search(store_root, [exp]) == {
        done: ("FINISHED", {"lr": "0.01"}),
        live: ("RUNNING", {"lr": "0.1"}),
    }
    assert cache.read_bytes() == before


def test_sql_in_a_journal_kind_is_never_run(store_root: Path) -> None:
    exp, done, live = _runs(store_root)
    _search(store_root, [exp])  # both runs cached
    entry = entry_of(read_run(str(store_root / exp / live), live, exp, {}, None, ("tag",)))
    entry["kinds"] = ["run_id = 'pwned', tag"]
    _append(store_root / exp / JOURNAL_FILE, entry)
    index = RunIndex(store_root)
    try:
        index.ingest([store_root / exp])  # fold the journal, as a search does first
    finally:
        index.close()
    conn = sqlite3.connect(store_root / INDEX_FILE)
    try:
        assert sorted(r[0] for r in conn.execute("SELECT run_id FROM runs")) == sorted([done, live])
    finally:
        conn.close()
    assert _search(store_root, [exp]) == {
        done: ("FINISHED", {"lr": "0.01"}),
        live: ("RUNNING", {"lr": "0.1"}),
    }


def test_a_journal_cannot_speak_for_another_experiments_runs(store_root: Path) -> None:
    exp, done, live = _runs(store_root)
    other, _, _ = _runs(store_root, "other")
    _search(store_root, [exp, other])
    # in the other experiment's journal (one its owner can write): a lie about our live run
    _append(store_root / other / JOURNAL_FILE, _forged(store_root, exp, live))
    _search(store_root, [other])  # folds that journal
    assert _search(store_root, [exp])[live] == ("RUNNING", {"lr": "0.1"})
    assert _search(store_root, [exp], "params.lr = '9.9'") == {}


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_journal_owned_by_another_user_is_ignored(store_root: Path) -> None:
    exp, done, live = _runs(store_root)
    _search(store_root, [exp])
    journal = store_root / exp / JOURNAL_FILE
    _append(journal, _forged(store_root, exp, live))
    os.chown(journal, NOBODY, NOBODY)
    assert _search(store_root, [exp]) == {
        done: ("FINISHED", {"lr": "0.01"}),
        live: ("RUNNING", {"lr": "0.1"}),
    }
    assert _search(store_root, [exp], "params.lr = '9.9'") == {}


@pytest.mark.parametrize("damage", ["info", "metric-value", "metric-extra", "values"])
def test_a_journal_line_of_the_wrong_shape_is_skipped(store_root: Path, damage: str) -> None:
    exp, done, live = _runs(store_root)
    _search(store_root, [exp])
    entry = entry_of(read_run(str(store_root / exp / done), done, exp, {}, None))
    if damage == "info":
        entry["info"] = {}
    elif damage == "values":
        entry["values"] = [["metric", "acc"]]
    else:
        entry["values"] = [
            [
                k,
                key,
                "abc" if damage == "metric-value" else v,
                s,
                "garbage" if damage == "metric-extra" else x,
            ]
            for k, key, v, s, x in entry["values"]
        ]
    _append(store_root / exp / JOURNAL_FILE, entry)
    want = {done: ("FINISHED", {"lr": "0.01"}), live: ("RUNNING", {"lr": "0.1"})}
    assert _search(store_root, [exp]) == want
    assert _search(store_root, [exp], "metrics.acc > 0.5") == {done: want[done]}
    # the cache still takes writes (no transaction was left open); a run re-read from the last
    # offset the cache holds for its metric file
    store = FileStore(store_root)
    try:
        store.log_metrics(done, {"acc": 0.1}, step=5)
        store.set_terminated(live, "FAILED")
    finally:
        store.close()
    assert _search(store_root, [exp], "metrics.acc > 0.5") == {}
    assert _search(store_root, [exp])[live] == ("FAILED", {"lr": "0.1"})


def test_a_cache_busy_past_the_timeout_is_not_taken_for_corrupt(store_root: Path, monkeypatch) -> None:
    """Another process holds the cache's write lock longer than a search waits: the search answers
    from the files, and the cache (sound, and in use) is not deleted."""
    import sqlite3

    from mlkit.tracking import index as index_module

    store = FileStore(store_root)
    ids = sorted(store.create_run("0").info.run_id for _ in range(3))
    store.search_runs("0", "attributes.status = 'RUNNING'")
    store.close()
    cache = store_root / index_module.INDEX_FILE
    holder = sqlite3.connect(cache, isolation_level=None)
    holder.execute("PRAGMA journal_mode=DELETE")  # as an older mlkit or a sqlite3 shell may leave it
    holder.execute("BEGIN EXCLUSIVE")  # another process writing, for longer than a search waits
    holder.execute("INSERT INTO kv VALUES ('tag', 'sentinel', 'x', 'v', 's', '')")
    try:
        monkeypatch.setattr(index_module, "BUSY_TIMEOUT_S", 0.2)
        runs, _ = FileStore(store_root).search_runs("0", "attributes.status = 'RUNNING'")
        assert sorted(r.info.run_id for r in runs) == ids
    finally:
        holder.execute("COMMIT")  # the other process's write lands in the cache file, still there
        holder.close()
    sentinel = sqlite3.connect(cache).execute("SELECT count(*) FROM kv WHERE key = 'sentinel'").fetchone()[0]
    assert sentinel == 1  # the cache was not deleted under the process writing it
