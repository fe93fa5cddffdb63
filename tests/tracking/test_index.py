"""The search cache notices changes made behind its back, and survives being broken."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from mlkit.tracking.index import INDEX_FILE, RACY_NS
from mlkit.tracking.store import FileStore


def _settle(path: Path) -> None:
    """Age every file of the store past the racy window, as if written a while ago."""
    old = time.time() - 10
    for p in [path, *path.rglob("*")]:
        try:
            os.utime(p, (old, old))
        except FileNotFoundError:
            continue  # the cache's -wal, say, removed as a connection closed
    time.sleep(RACY_NS / 1e9 + 0.05)  # ctimes are 'now': let them age too


@pytest.fixture
def store(store_root: Path) -> FileStore:
    return FileStore(store_root)


def _ids(store: FileStore, filter_string: str) -> set[str]:
    return {r.info.run_id for r in FileStore(store.root).search_runs(["0"], filter_string)[0]}


def test_index_file_sits_at_the_root_and_no_directories_are_added(store: FileStore, store_root: Path) -> None:
    run_id = store.create_run("0").info.run_id
    store.log_metric(run_id, "acc", 0.5)
    store.search_runs(["0"], "metrics.acc > 0")
    assert (store_root / INDEX_FILE).is_file()
    assert sorted(p.name for p in store_root.iterdir() if p.is_dir()) == [".trash", "0"]


def test_sees_appends_new_keys_tag_rewrites_and_status_from_other_writers(
    store: FileStore, store_root: Path
) -> None:
    run_id = store.create_run("0").info.run_id
    store.log_metric(run_id, "acc", 0.1)
    store.log_param(run_id, "lr", "0.1")
    store.set_tag(run_id, "team", "aaaa")
    store.close()
    _settle(store_root)
    assert _ids(store, "metrics.acc > 0.5") == set()
    run_dir = store.run_dir(run_id)
    # MLflow-style writers: append in place, write new files, overwrite a tag in place (same size)
    with open(run_dir / "metrics" / "acc", "a") as fh:
        fh.write(f"{int(time.time() * 1000)} 0.9 1\n")
    assert _ids(store, "metrics.acc > 0.5") == {run_id}
    (run_dir / "params" / "new").write_text("x")
    assert _ids(store, "params.new = 'x'") == {run_id}
    (run_dir / "metrics" / "nested").mkdir()
    (run_dir / "metrics" / "nested" / "m").write_text("1000 3.0 0\n")
    assert _ids(store, "metrics.`nested/m` = 3") == {run_id}
    with open(run_dir / "tags" / "team", "r+") as fh:
        fh.write("bbbb")
    assert _ids(store, "tags.team = 'bbbb'") == {run_id}
    text = (run_dir / "meta.yaml").read_text().replace("status: 1", "status: 4")
    (run_dir / "meta.yaml").write_text(text)
    assert _ids(store, "attributes.status = 'FAILED'") == {run_id}
    found = FileStore(store.root).search_runs(["0"])[0][0]
    assert found.data.metrics == {"acc": 0.9, "nested/m": 3.0} and found.data.tags["team"] == "bbbb"


def test_new_and_removed_runs(store: FileStore) -> None:
    first = store.create_run("0").info.run_id
    assert _ids(store, "") == {first}
    second = store.create_run("0").info.run_id
    assert _ids(store, "") == {first, second}
    import shutil

    shutil.rmtree(store.run_dir(first))
    assert _ids(store, "") == {second}


def test_corrupt_index_is_rebuilt(store: FileStore, store_root: Path) -> None:
    run_id = store.create_run("0").info.run_id
    store.log_metric(run_id, "acc", 0.7)
    store.close()
    assert _ids(store, "metrics.acc > 0.5") == {run_id}
    for suffix in ("-wal", "-shm"):
        Path(f"{store_root / INDEX_FILE}{suffix}").unlink(missing_ok=True)
    (store_root / INDEX_FILE).write_bytes(b"this is not sqlite" * 100)
    assert _ids(store, "metrics.acc > 0.5") == {run_id}


def test_read_only_index_location_still_answers(store: FileStore, store_root: Path) -> None:
    run_id = store.create_run("0").info.run_id
    (store_root / INDEX_FILE).mkdir()  # something in the way: the cache cannot be opened
    assert _ids(store, "") == {run_id}


def _latest_acc(store: FileStore, run_id: str) -> float:
    runs = FileStore(store.root).search_runs(["0"], "metrics.acc > -1")[0]
    return next(r for r in runs if r.info.run_id == run_id).data.metrics["acc"]


def test_a_metric_file_rewritten_in_place_longer_is_read_again_whole(
    store: FileStore, store_root: Path
) -> None:
    """The cache reads a metric file on from where it stopped (MLflow and mlkit only append).
    A file rewritten in place — truncated and written anew, same inode, longer than before (`cp`
    of another run's file over it, an editor) — must not be read on from the old offset: the
    bytes before it are checked, and a file that changed there is read whole."""
    run_id = store.create_run("0").info.run_id
    path = store.run_dir(run_id) / "metrics" / "acc"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("1000 0.1 0\n1001 0.2 1\n")
    _settle(store_root)
    assert _latest_acc(store, run_id) == 0.2  # cached, with its offset
    inode = path.stat().st_ino
    with open(path, "r+") as fh:  # in place: the same inode
        fh.truncate(0)
        fh.write("1000 0.7 9\n1001 0.95 1\n1002 0.5 2\n")
    assert path.stat().st_ino == inode
    _settle(store_root)
    assert _latest_acc(store, run_id) == 0.7  # step 9, on the first line: the whole new file was read
    with open(path, "a") as fh:  # and appends after that are still read on from the new offset
        fh.write("1003 0.25 9\n")
    assert _latest_acc(store, run_id) == 0.25


@pytest.mark.parametrize(
    "extra",
    [
        [1, 1000, 2, 3, None, "0.2 1\n0.2 1\n0.2 1\n"[:16]],  # an offset shorter than its tail
        [1, 1000, 2, -5, None, ""],  # a negative offset, no tail
        [1, 1000, 2, 10, None, "中文"],  # a tail that is no latin-1 text
        [1, 1000, 2, 10_000, None, "x"],  # past the end of the file
        [1, 1000, 2, 11, None, 7],  # a tail of the wrong type
    ],
)
def test_a_cached_metric_entry_that_cannot_be_right_means_a_whole_read(tmp_path: Path, extra: list) -> None:
    """A journal line may say anything its shape allows: whatever offset and tail it claims, the
    metric is read whole and comes out as a fresh read gives it — never missing, never a traceback."""
    from mlkit.tracking.runsummary import _read_metric

    path = tmp_path / "acc"
    path.write_text("1000 0.1 0\n1001 0.2 1\n")
    fresh = _read_metric(str(path), "acc", None, None)
    extra[4] = path.stat().st_ino
    forged = _read_metric(str(path), "acc", ("0.99", "sig", json.dumps(extra)), None)
    assert forged is not None and fresh is not None
    assert forged[0] == fresh[0] == "0.2" and json.loads(forged[2])[:4] == json.loads(fresh[2])[:4]


def test_a_run_its_cached_params_exclude_costs_no_stat_and_the_rest_stay_exact(
    store: FileStore, store_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filter on a param leaves out every cached run whose param (immutable) fails it without a
    `stat` of any of its files; the runs that pass are still checked against their files."""
    import mlkit.tracking.index as index

    runs = {}
    for i in range(6):
        run_id = store.create_run("0").info.run_id
        store.log_param(run_id, "lr", "0.1" if i % 2 else "0.01")
        store.log_metric(run_id, "acc", i / 10)
        store.set_terminated(run_id, "FINISHED")
        runs[run_id] = i
    store.close()
    _settle(store_root)
    wanted = "params.lr = '0.01' and metrics.acc > 0.1"
    assert _ids(store, wanted) == {r for r, i in runs.items() if i in (2, 4)}  # the cache is warm now
    touched: list[str] = []

    def counted(real):  # type: ignore[no-untyped-def]
        def call(path, *args, **kwargs):  # type: ignore[no-untyped-def]
            touched.append(str(path))
            return real(path, *args, **kwargs)

        return call

    monkeypatch.setattr(index, "file_sig", counted(index.file_sig))
    monkeypatch.setattr(index.os.path, "lexists", counted(os.path.lexists))
    # run 0 (lr 0.01, acc 0.0) is appended to behind the cache's back: it must now match
    run0 = next(r for r, i in runs.items() if i == 0)
    with open(store.run_dir(run0) / "metrics" / "acc", "a") as fh:
        fh.write(f"{int(time.time() * 1000)} 0.9 1\n")
    assert _ids(store, wanted) == {r for r, i in runs.items() if i in (0, 2, 4)}
    excluded = [str(store.run_dir(r)) for r, i in runs.items() if i % 2]
    assert touched and not [p for p in touched if any(p.startswith(d + "/") for d in excluded)]


def _scandirs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The directories the search cache lists from now on."""
    import mlkit.tracking.index as index

    listed: list[str] = []
    real = os.scandir

    def counted(path):  # type: ignore[no-untyped-def]
        listed.append(str(path))
        return real(path)

    monkeypatch.setattr(index.os, "scandir", counted)
    return listed


def test_an_experiment_directory_unchanged_since_it_was_listed_is_not_listed_again(
    store: FileStore, store_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = store.create_run("0").info.run_id
    store.log_param(first, "lr", "0.01")
    store.close()
    _settle(store_root)
    assert _ids(store, "params.lr = '0.01'") == {first}  # folds the journal, a change to 0/ just now
    time.sleep(RACY_NS / 1e9 + 0.05)
    assert _ids(store, "params.lr = '0.01'") == {first}  # lists 0/ and records its signature
    exp_dir = str(store_root / "0")
    listed = _scandirs(monkeypatch)
    assert _ids(store, "params.lr = '0.01'") == {first}
    assert exp_dir not in listed
    # any entry added, removed or renamed changes the directory: it is listed again
    second = store.create_run("0").info.run_id
    store.log_param(second, "lr", "0.01")
    assert _ids(store, "params.lr = '0.01'") == {first, second}
    assert exp_dir in listed
    os.rename(store.run_dir(second), f"{exp_dir}/{'f' * 32}")
    assert _ids(store, "params.lr = '0.01'") == {first, "f" * 32}
    import shutil

    shutil.rmtree(store.run_dir(first))
    assert _ids(store, "params.lr = '0.01'") == {"f" * 32}


def test_a_run_directory_listed_before_its_meta_yaml_was_written_is_found_once_it_is(
    store: FileStore, store_root: Path
) -> None:
    """MLflow makes a run's directory, then writes meta.yaml into it (which leaves the experiment
    directory as it was): a listing between the two must not be taken for the experiment's runs."""
    done = store.create_run("0").info.run_id
    store.log_param(done, "lr", "0.01")
    store.close()
    half = store_root / "0" / ("a" * 32)
    (half / "params").mkdir(parents=True)
    (half / "params" / "lr").write_text("0.01")
    _settle(store_root)
    assert _ids(store, "params.lr = '0.01'") == {done}  # folds the journal: 0/ changed just now
    time.sleep(RACY_NS / 1e9 + 0.05)
    assert _ids(store, "params.lr = '0.01'") == {done}  # `half` has no meta.yaml: skipped, as by MLflow
    meta = (store.run_dir(done) / "meta.yaml").read_text().replace(done, "a" * 32)
    (half / "meta.yaml").write_text(meta)  # 0/ itself is left as it was
    assert _ids(store, "params.lr = '0.01'") == {done, "a" * 32}


def test_a_param_written_behind_the_caches_back_into_a_run_that_had_none_is_found(
    store: FileStore, store_root: Path
) -> None:
    with_lr = store.create_run("0").info.run_id
    store.log_param(with_lr, "lr", "0.1")
    without = store.create_run("0").info.run_id
    store.close()
    _settle(store_root)
    assert _ids(store, "params.lr = '0.01'") == set()
    (store.run_dir(without) / "params" / "lr").write_text("0.01")  # as MLflow writes a param
    assert _ids(store, "params.lr = '0.01'") == {without}


def test_a_version_3_cache_is_upgraded_in_place_keeping_its_runs(store: FileStore, store_root: Path) -> None:
    import sqlite3

    import mlkit.tracking.index as index

    run_id = store.create_run("0").info.run_id
    store.log_param(run_id, "lr", "0.01")
    store.close()
    _settle(store_root)
    assert _ids(store, "params.lr = '0.01'") == {run_id}
    with sqlite3.connect(store_root / INDEX_FILE) as conn:  # as version 3 left it: no exps table
        conn.execute("DROP TABLE exps")
        conn.execute("DROP INDEX runs_exp_start")
        conn.execute("CREATE INDEX runs_exp ON runs (exp_id)")
        conn.execute("UPDATE schema SET version = 3")
    conn.close()
    time.sleep(RACY_NS / 1e9 + 0.05)  # 0/ changed when the search folded the journal
    reads: list[str] = []
    real = index.read_run

    def counted(run_dir, *args, **kwargs):  # type: ignore[no-untyped-def]
        reads.append(run_dir)
        return real(run_dir, *args, **kwargs)

    index.read_run = counted  # type: ignore[assignment]
    try:
        assert _ids(store, "params.lr = '0.01'") == {run_id}
    finally:
        index.read_run = real  # type: ignore[assignment]
    assert reads == []  # answered from the rows version 3 held
    with sqlite3.connect(store_root / INDEX_FILE) as conn:
        assert conn.execute("SELECT version FROM schema").fetchone() == (index.SCHEMA_VERSION,)
        assert conn.execute("SELECT count(*) FROM exps").fetchone() == (1,)
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "runs_exp_start" in indexes and "runs_exp" not in indexes
    conn.close()


def test_a_filtered_page_in_the_default_order_checks_the_runs_up_to_the_page_only(
    store: FileStore, store_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without order_by, a page of a filtered search is the first runs by start time (newest
    first): past the page, no run's meta.yaml is looked at, and the pages still add up to the
    whole answer — with a run deleted and one whose status changed behind the cache's back."""
    import mlkit.tracking.index as index

    ids = []
    for i in range(12):
        run_id = store.create_run("0", start_time=1_000_000 + i).info.run_id
        store.log_param(run_id, "lr", "0.01" if i % 3 else "0.1")
        store.set_terminated(run_id, "FINISHED")
        ids.append(run_id)
    store.close()
    _settle(store_root)
    wanted = "params.lr = '0.01'"
    newest_first = [r for i, r in reversed(list(enumerate(ids))) if i % 3]
    assert [r.info.run_id for r in FileStore(store_root).search_runs(["0"], wanted)[0]] == newest_first
    FileStore(store_root).delete_run(ids[10])  # the newest match but one
    meta = store.run_dir(ids[8]) / "meta.yaml"
    meta.write_text(meta.read_text().replace("status: 3", "status: 4"))  # FAILED, in place
    expected = [r for r in newest_first if r != ids[10]]
    touched: list[str] = []
    real = index.file_sig
    monkeypatch.setattr(index, "file_sig", lambda path: touched.append(path) or real(path))
    page, token = FileStore(store_root).search_runs(["0"], wanted, max_results=2)
    assert [r.info.run_id for r in page] == expected[:2] and token is not None
    assert {r.info.run_id: r.info.status for r in page}[ids[8]] == "FAILED"
    metas = {os.path.basename(os.path.dirname(p)) for p in touched if p.endswith("/meta.yaml")}
    # 11 and 7 and 5 make the page and one more (for the token): 10 and 8 changed, and were read
    # again; 4, 2 and 1 are past the page (9, 6, 3, 0: left out by their param, no stat at all)
    assert metas == {ids[11], ids[10], ids[8], ids[7], ids[5]}
    seen, token = [], None
    while True:
        page, token = FileStore(store_root).search_runs(["0"], wanted, max_results=3, page_token=token)
        seen += [r.info.run_id for r in page]
        if token is None:
            break
    assert seen == expected


def test_a_filtered_page_checks_metric_files_only_as_far_as_the_page_goes(
    store: FileStore, store_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlkit.tracking.index as index

    ids = []
    for i in range(12):
        run_id = store.create_run("0", start_time=1_000_000 + i).info.run_id
        store.log_metric(run_id, "acc", 0.9)
        ids.append(run_id)
    store.close()
    _settle(store_root)
    assert len(FileStore(store_root).search_runs(["0"], "metrics.acc > 0.5")[0]) == 12
    monkeypatch.setattr(index, "_WALK_STEP", 2)  # walk 2 runs, then 4, 8...
    touched: list[str] = []
    real = index.file_sig
    monkeypatch.setattr(index, "file_sig", lambda path: touched.append(path) or real(path))
    with open(store.run_dir(ids[9]) / "metrics" / "acc", "a") as fh:  # behind the cache's back
        fh.write(f"{int(time.time() * 1000)} 0.1 1\n")
    page, _ = FileStore(store_root).search_runs(["0"], "metrics.acc > 0.5", max_results=2)
    assert [r.info.run_id for r in page] == [ids[11], ids[10]]
    page, _ = FileStore(store_root).search_runs(["0"], "metrics.acc > 0.5", max_results=3)
    assert [r.info.run_id for r in page] == [ids[11], ids[10], ids[8]]  # 9 no longer matches
    accs = {os.path.basename(os.path.dirname(os.path.dirname(p))) for p in touched if p.endswith("/acc")}
    assert accs == set(ids[6:])  # the first 2 runs, then 4 (the page and one more were found there)


def test_a_run_added_by_a_writer_that_puts_the_directory_mtime_back_is_seen(
    store: FileStore, store_root: Path
) -> None:
    """rsync -a (and anyone who owns the directory) sets an experiment directory's mtime back after
    adding runs to it; its ctime cannot be set back, and the cache's signature holds both."""
    import shutil

    first = store.create_run("0").info.run_id
    store.log_param(first, "lr", "0.01")
    store.close()
    _settle(store_root)
    assert _ids(store, "params.lr = '0.01'") == {first}  # folds the journal
    time.sleep(RACY_NS / 1e9 + 0.05)
    assert _ids(store, "params.lr = '0.01'") == {first}  # records 0/'s signature
    exp_dir = store_root / "0"
    before = os.stat(exp_dir)
    copy = exp_dir / ("b" * 32)
    shutil.copytree(store.run_dir(first), copy)
    (copy / "meta.yaml").write_text((copy / "meta.yaml").read_text().replace(first, "b" * 32))
    os.utime(exp_dir, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(exp_dir).st_mtime_ns == before.st_mtime_ns
    assert _ids(store, "params.lr = '0.01'") == {first, "b" * 32}


def test_each_experiment_answers_for_its_own_runs_and_a_run_moved_between_them_follows(
    store: FileStore, store_root: Path
) -> None:
    other = store.create_experiment("other")
    mine = {store.create_run("0").info.run_id for _ in range(2)}
    theirs = {store.create_run(other).info.run_id for _ in range(5)}
    for run_id in mine | theirs:
        store.log_param(run_id, "lr", "0.01")
    store.close()
    _settle(store_root)

    def ids(exps: list[str]) -> set[str]:
        return {r.info.run_id for r in FileStore(store_root).search_runs(exps, "params.lr = '0.01'")[0]}

    assert ids(["0"]) == mine and ids([other]) == theirs  # fold the journals
    time.sleep(RACY_NS / 1e9 + 0.05)
    assert ids(["0"]) == mine and ids([other]) == theirs and ids(["0", other]) == mine | theirs
    moved = sorted(theirs)[0]
    os.rename(store_root / other / moved, store_root / "0" / moved)  # as `mv` would, meta.yaml untouched
    assert ids(["0"]) == mine | {moved}
    assert ids([other]) == theirs - {moved}


def test_a_page_in_a_metrics_order_checks_meta_yaml_up_to_the_page_only(
    store: FileStore, store_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """order_by a metric: every run's metric file is checked (an append can move any run to the
    top), but meta.yaml only for the runs the page walks past — with a run deleted, one whose
    status changed and one moved to the top by an append, all behind the cache's back."""
    import mlkit.tracking.index as index

    accs = [(i * 5 % 12) / 12 for i in range(12)]  # all different
    ids = []
    for i, acc in enumerate(accs):
        run_id = store.create_run("0", start_time=1_000_000 + i).info.run_id
        store.log_metric(run_id, "acc", acc)
        store.set_terminated(run_id, "FINISHED")
        ids.append(run_id)
    store.close()
    _settle(store_root)
    best = [ids[i] for i in sorted(range(12), key=lambda i: -accs[i])]

    def ordered(max_results: int, token: str | None = None) -> tuple[list[str], str | None]:
        page, token = FileStore(store_root).search_runs(["0"], "", ["metrics.acc DESC"], max_results, token)
        return [r.info.run_id for r in page], token

    assert ordered(12) == (best, None)
    FileStore(store_root).delete_run(best[0])
    meta = store.run_dir(best[2]) / "meta.yaml"
    meta.write_text(meta.read_text().replace("status: 3", "status: 4"))  # FAILED, in place
    with open(store.run_dir(best[-1]) / "metrics" / "acc", "a") as fh:  # the worst becomes the best
        fh.write(f"{int(time.time() * 1000)} 0.99 1\n")
    expected = [best[-1], *best[1:-1]]
    touched: list[str] = []
    real = index.file_sig
    monkeypatch.setattr(index, "file_sig", lambda path: touched.append(path) or real(path))
    page, token = FileStore(store_root).search_runs(["0"], "", ["metrics.acc DESC"], max_results=3)
    assert [r.info.run_id for r in page] == expected[:3] and token is not None
    assert {r.info.run_id: r.info.status for r in page}[best[2]] == "FAILED"
    metas = {os.path.basename(os.path.dirname(p)) for p in touched if p.endswith("/meta.yaml")}
    accs_checked = {
        os.path.basename(os.path.dirname(os.path.dirname(p))) for p in touched if p.endswith("/acc")
    }
    # the walk accepts the page's 3 runs and one more, for the token (best[1], [3], [4], [5]: the
    # appended best[-1] was read again whole and does not count), passing best[0] (deleted) and
    # best[2] (its status) on the way; none past them
    assert metas == set(best[:6]) and accs_checked == set(ids)
    seen, token = [], None
    while True:
        page_ids, token = ordered(4, token)
        seen += page_ids
        if token is None:
            break
    assert seen == expected
