"""Runs mlkit writes keep the search cache current (issue 20): the first search of a store mlkit
wrote reads no run from its files, and the journal is only ever a hint — MLflow's later writes,
torn lines, garbage and an unwritable journal never change an answer."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from mlkit.tracking import index as index_mod
from mlkit.tracking.runsummary import JOURNAL_FILE
from mlkit.tracking.store import FileStore

FILTER = "metrics.acc > 0.5 and params.lr = '0.01'"


def _write_runs(root: Path, n: int, start: int = 0) -> str:
    store = FileStore(root)
    exp = store.get_or_create_experiment("journal")
    for i in range(start, start + n):
        run_id = store.create_run(exp, run_name=f"run-{i}").info.run_id
        store.log_params(run_id, {"lr": ("0.1", "0.01")[i % 2], "seed": str(i)})
        for step in range(3):
            store.log_metrics(
                run_id, {"acc": (i % 10) / 10 + step * 0.01, "loss": 1.0 / (step + 1)}, step=step
            )
        store.set_tags(run_id, {"team": "vision", "shard": str(i % 3)})
        store.set_terminated(run_id, "FINISHED")
    store.close()
    return exp


def _mlflow_ids(root: Path, exp: str, filter_string: str) -> list[str]:
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    from mlflow.entities import ViewType
    from mlflow.store.tracking.file_store import FileStore as MlflowFileStore

    runs = MlflowFileStore(str(root)).search_runs(
        [exp], filter_string, ViewType.ACTIVE_ONLY, max_results=10000
    )
    return [r.info.run_id for r in runs]


def _mlkit_ids(root: Path, exp: str, filter_string: str) -> list[str]:
    store = FileStore(root)
    try:
        return [r.info.run_id for r in store.search_runs([exp], filter_string, max_results=10000)[0]]
    finally:
        store.close()


@pytest.fixture
def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The run directories the index reads from their files (the slow path)."""
    read: list[str] = []
    real = index_mod.read_run

    def spy(run_dir: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        read.append(run_dir)
        return real(run_dir, *args, **kwargs)

    monkeypatch.setattr(index_mod, "read_run", spy)
    return read


def test_first_search_of_a_store_mlkit_wrote_reads_no_run(store_root: Path, count_reads: list[str]) -> None:
    exp = _write_runs(store_root, 12)
    assert (store_root / exp / JOURNAL_FILE).is_file()
    first = _mlkit_ids(store_root, exp, FILTER)
    assert count_reads == []  # every run came from the journal, checked by stat only
    assert not (store_root / exp / JOURNAL_FILE).exists()  # folded into the cache and removed
    assert first == _mlflow_ids(store_root, exp, FILTER) and first
    whole = FileStore(store_root).get_run(first[0])
    shown = FileStore(store_root).search_runs([exp], f"attributes.run_id = '{first[0]}'")[0][0]
    assert (shown.data.params, shown.data.tags, shown.data.metrics) == (
        whole.data.params, whole.data.tags, whole.data.metrics,
    )  # fmt: skip
    assert shown.info.status == "FINISHED" and shown.info.end_time == whole.info.end_time


def test_mlflow_writes_after_the_journal_are_seen(store_root: Path) -> None:
    """The journal says what mlkit wrote; MLflow then changes the runs behind its back."""
    exp = _write_runs(store_root, 6)
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.store.tracking.file_store import FileStore as MlflowFileStore

    ids = _mlkit_ids(store_root, exp, "")  # nothing is searched yet: the journal is still there
    mlflow = MlflowFileStore(str(store_root))
    # (the journal was folded by the search above; write a fresh mlkit entry, then change it in MLflow)
    FileStore(store_root).set_tag(ids[0], "team", "speech")
    mlflow.log_metric(ids[0], Metric("acc", 0.99, 1, 5))
    mlflow.set_tag(ids[1], RunTag("team", "speech"))
    mlflow.log_param(ids[2], Param("new", "x"))
    for query in (FILTER, "tags.team = 'speech'", "params.new = 'x'", "metrics.acc > 0.9"):
        assert _mlkit_ids(store_root, exp, query) == _mlflow_ids(store_root, exp, query), query


def test_torn_lines_and_garbage_in_the_journal_change_nothing(store_root: Path) -> None:
    exp = _write_runs(store_root, 5)
    journal = store_root / exp / JOURNAL_FILE
    data = journal.read_bytes()
    lines = data.splitlines(keepends=True)
    # a writer killed mid-line, a line from something else, a wrong version, binary junk
    journal.write_bytes(
        b"".join(lines[:-1])
        + b"not json\n"
        + b'{"v":2,"run":"x"}\n'
        + b"\xff\xfe\x00\n"
        + lines[-1][: len(lines[-1]) // 2]
    )
    assert _mlkit_ids(store_root, exp, FILTER) == _mlflow_ids(store_root, exp, FILTER)
    assert _mlkit_ids(store_root, exp, "tags.shard = '1'") == _mlflow_ids(store_root, exp, "tags.shard = '1'")


def test_a_stale_entry_folded_late_is_caught_by_the_files(store_root: Path) -> None:
    """Entries folded out of order (a journal claimed by a search that died, picked up later) say
    what the files no longer hold: their signatures do not match, so the files win."""
    exp = _write_runs(store_root, 4)
    journal = store_root / exp / JOURNAL_FILE
    stale = journal.read_bytes()
    ids = _mlkit_ids(store_root, exp, "")
    store = FileStore(store_root)
    for run_id in ids:
        store.set_tag(run_id, "team", "speech")
    store.log_metric(ids[0], "acc", 0.99, step=9)
    assert _mlkit_ids(store_root, exp, "tags.team = 'speech'")  # the new entries are folded
    journal.write_bytes(stale)  # the old entries come back, to be folded after the new ones
    for query in ("tags.team = 'vision'", "tags.team = 'speech'", "metrics.acc > 0.9"):
        assert _mlkit_ids(store_root, exp, query) == _mlflow_ids(store_root, exp, query), query


def test_an_unwritable_journal_never_fails_a_write(store_root: Path) -> None:
    exp = _write_runs(store_root, 1)
    journal = store_root / exp / JOURNAL_FILE
    journal.unlink()
    os.mkdir(journal)  # open(O_WRONLY) fails: EISDIR
    store = FileStore(store_root)
    run_id = store.create_run(exp).info.run_id
    store.log_param(run_id, "lr", "0.01")
    store.set_tag(run_id, "a", "b")
    store.set_terminated(run_id, "FINISHED")
    assert store.get_run(run_id).info.status == "FINISHED"
    os.rmdir(journal)
    assert sorted(_mlkit_ids(store_root, exp, "")) == sorted(_mlflow_ids(store_root, exp, ""))


def _writer(root: str, start: int) -> None:
    _write_runs(Path(root), 8, start)


def _searcher(root: str, exp: str, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    try:
        for _ in range(6):
            _mlkit_ids(Path(root), exp, FILTER)
        out.put("ok")
    except Exception as exc:  # noqa: BLE001
        out.put(repr(exc))


def test_concurrent_writers_and_searchers_agree_with_mlflow(store_root: Path) -> None:
    """4 processes write runs while 2 search (and so fold the journal) at the same time."""
    exp = _write_runs(store_root, 1)
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(store_root), 100 * (k + 1))) for k in range(4)]
    procs += [ctx.Process(target=_searcher, args=(str(store_root), exp, results)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert [results.get(timeout=5) for _ in range(2)] == ["ok", "ok"]
    for query in (FILTER, "tags.shard = '2'", ""):
        assert sorted(_mlkit_ids(store_root, exp, query)) == sorted(_mlflow_ids(store_root, exp, query)), (
            query
        )
    assert len(_mlkit_ids(store_root, exp, "")) == 33
