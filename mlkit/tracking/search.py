"""Searching a store's runs (MLflow's search_runs): the store's run index (index.py) gives fresh
run summaries, search_grammar.py parses the filter and order_by and evaluates them on each run."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from mlkit.errors import InvalidInputError
from mlkit.tracking.entities import ACTIVE, DELETED, Run, RunData, RunInfo
from mlkit.tracking.files import resolve_artifact_uri
from mlkit.tracking.index import IndexedRun, Ordering
from mlkit.tracking.search_grammar import (
    ATTRIBUTE,
    METRIC,
    Clause,
    RunRow,
    check_max_results,
    decode_page_token,
    encode_page_token,
    holds,
    matches,
    parse_filter,
    parse_order_by,
    sort_rows,
)

if TYPE_CHECKING:
    from mlkit.tracking.store import FileStore

_VIEWS = {"active": (ACTIVE,), "deleted": (DELETED,), "all": (ACTIVE, DELETED)}
_FIXED = frozenset({"start_time", "run_id"})  # attributes no MLflow call changes: a page can walk their order


def _view(run_view: str | int) -> tuple[str, ...]:
    aliases = {1: "active", 2: "deleted", 3: "all", "active_only": "active", "deleted_only": "deleted"}
    key = aliases.get(run_view.lower() if isinstance(run_view, str) else run_view, run_view)
    if key not in _VIEWS:
        raise InvalidInputError(f"invalid run view {run_view!r}", hint="use 'active', 'deleted' or 'all'")
    return _VIEWS[str(key)]


def _exp_dirs(store: FileStore, experiment_ids: list[str] | str | None) -> list[Path]:
    if experiment_ids is None:
        return store.experiment_dirs("all")
    ids = [experiment_ids] if isinstance(experiment_ids, str) else [str(e) for e in experiment_ids]
    return [store.experiment_dir(e) for e in dict.fromkeys(ids)]


def indexed_runs(
    store: FileStore,
    experiment_ids: list[str] | str | None,
    keys: set[tuple[str, str]] | None = None,
    attrs: set[str] | None = None,
    clauses: list[Clause] | None = None,
    first: int | None = None,
    wanted: Callable[[IndexedRun], bool] | None = None,
    order: Ordering | None = None,
) -> list[IndexedRun]:
    """Fresh attributes `attrs` and values of `keys` of every run of these experiments (None = all).
    Runs the cache knows to fail one of `clauses` on a key may be left out (RunIndex.query's tests);
    the caller still applies every clause to what is returned. `first`, `wanted`, `order`: only
    a page is asked for (RunIndex.query)."""
    on_keys = [c for c in clauses or [] if c.type != ATTRIBUTE]
    tests = {
        k: _key_test(k[0], [c for c in on_keys if (c.type, c.key) == k])
        for k in {(c.type, c.key) for c in on_keys}
    }
    return store.run_index().query(
        _exp_dirs(store, experiment_ids), keys or set(), attrs or set(), tests, first, wanted, order
    )


def _key_test(kind: str, clauses: list[Clause]) -> Callable[[str | None], bool]:
    """The clauses on one key as a test of a cached value (as IndexedRun.split reads it: a metric
    is a float, '' when its file has no point; None when the run has no such key)."""

    def test(raw: str | None) -> bool:
        lhs: str | float | None = raw
        if kind == METRIC and raw is not None:
            lhs = float(raw) if raw != "" else None
        return all(holds(c, lhs) for c in clauses)

    return test


def _row(run: IndexedRun) -> RunRow:
    params, tags, metrics = run.split()
    return RunRow(run.info, params, tags, metrics, {"run": run})


def run_of(store: FileStore, run: IndexedRun) -> Run:
    """A Run entity from a complete index entry."""
    info = run.info
    uri = resolve_artifact_uri(run.run_dir, str(info.get("artifact_uri") or ""))
    run_info = RunInfo(
        run_id=run.run_id,
        run_uuid=run.run_id,
        experiment_id=str(info.get("experiment_id") or run.exp_id),
        run_name=str(info.get("run_name") or ""),
        user_id=str(info.get("user_id") or "unknown"),
        status=str(info["status"]),
        start_time=info.get("start_time"),
        end_time=info.get("end_time") or None,
        artifact_uri=uri,
        lifecycle_stage=str(info.get("lifecycle_stage") or ACTIVE),
    )
    params, tags, metrics = run.split()
    return Run(run_info, RunData(params, metrics, tags))


def search_rows(
    store: FileStore,
    experiment_ids: list[str] | str | None,
    filter_string: str = "",
    order_by: list[str] | None = None,
    run_view: str | int = "active",
    first: int | None = None,
) -> list[RunRow]:
    """Every matching run as a RunRow (holding only the keys the query needs), in order; with
    `first`, at least the first `first` of them (as many as there are) — all of them when the
    order_by names an attribute other than start_time and run_id (those come from meta.yaml,
    which is checked only for the runs a page walks past)."""
    clauses = parse_filter(filter_string)
    order = parse_order_by(order_by)
    keys = {(c.type, c.key) for c in clauses if c.type != ATTRIBUTE}
    keys |= {(o.type, o.key) for o in order if o.type != ATTRIBUTE}
    attrs = {c.key for c in clauses if c.type == ATTRIBUTE} | {o.key for o in order if o.type == ATTRIBUTE}
    stages = _view(run_view)
    rows: dict[str, RunRow | None] = {}  # run id -> its row, None when it does not match

    def wanted(run: IndexedRun) -> bool:
        row = _row(run) if run.info.get("lifecycle_stage", ACTIVE) in stages else None
        rows[run.run_id] = row if row is not None and matches(row, clauses) else None
        return rows[run.run_id] is not None

    def arrange(runs: list[IndexedRun]) -> list[IndexedRun]:
        return [row.extra["run"] for row in sort_rows([_row(run) for run in runs], order_by)]

    walk = None
    if any(o.type == ATTRIBUTE and o.key not in _FIXED for o in order):
        first = None  # meta.yaml holds the order: every matching run is checked and sorted
    elif order:
        walk = Ordering(frozenset((o.type, o.key) for o in order if o.type != ATTRIBUTE), arrange)
    found = indexed_runs(store, experiment_ids, keys, attrs, clauses, first, wanted, walk)
    for run in found:
        if run.run_id not in rows:  # read from its files: the walk did not see it
            wanted(run)
    return sort_rows([row for row in (rows[run.run_id] for run in found) if row is not None], order_by)


def complete_runs(store: FileStore, rows: list[RunRow]) -> list[Run]:
    """Run entities with all their data for these rows (every file checked)."""
    entries = store.run_index().complete([r.extra["run"] for r in rows])
    return [run_of(store, e) for e in entries]


def search_runs(
    store: FileStore,
    experiment_ids: list[str] | str | None,
    filter_string: str = "",
    order_by: list[str] | None = None,
    max_results: int = 1000,
    page_token: str | None = None,
    run_view: str | int = "active",
) -> tuple[list[Run], str | None]:
    """MLflow's search_runs: (runs of this page, token of the next page or None)."""
    with _collector_paused():
        return _search_runs(store, experiment_ids, filter_string, order_by, max_results, page_token, run_view)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector off for the search: it makes a few objects per run and no cycles,
    and the collector's passes over them were ~30 % of a search returning 12,500 of 100,000 runs."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _search_runs(
    store: FileStore,
    experiment_ids: list[str] | str | None,
    filter_string: str,
    order_by: list[str] | None,
    max_results: int,
    page_token: str | None,
    run_view: str | int,
) -> tuple[list[Run], str | None]:
    check_max_results(max_results)
    offset = decode_page_token(page_token)
    if not parse_filter(filter_string) and not parse_order_by(order_by):  # the newest runs (`runs list`)
        recent = store.run_index().recent(
            _exp_dirs(store, experiment_ids), _view(run_view), offset + max_results + 1
        )
        if recent is not None:
            token = encode_page_token(offset + max_results) if len(recent) > offset + max_results else None
            entries = store.run_index().complete(recent[offset : offset + max_results])
            return [run_of(store, e) for e in entries], token
    rows = search_rows(store, experiment_ids, filter_string, order_by, run_view, offset + max_results + 1)
    page = rows[offset : offset + max_results]
    token = encode_page_token(offset + max_results) if offset + max_results < len(rows) else None
    return complete_runs(store, page), token
