"""search_runs: the filter grammar, its errors, order_by, paging."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlkit.errors import InvalidInputError
from mlkit.tracking.search_grammar import decode_page_token, encode_page_token, parse_filter
from mlkit.tracking.store import FileStore


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[FileStore, str, list[str]]:
    """Five runs with known params, metrics, tags and start times (shared: tests only read them)."""
    return _make_runs(tmp_path_factory.mktemp("search") / "mlruns")


@pytest.fixture
def own_runs(store_root: Path) -> tuple[FileStore, str, list[str]]:
    """The same five runs in this test's own store (for tests that change them)."""
    return _make_runs(store_root)


def _make_runs(root: Path) -> tuple[FileStore, str, list[str]]:
    store = FileStore(root)
    exp = store.create_experiment("search")
    ids = []
    for i in range(5):
        run_id = store.create_run(exp, run_name=f"run-{i}", start_time=1000 + i).info.run_id
        store.log_params(run_id, {"lr": ["0.1", "0.01"][i % 2], "opt": "Adam" if i < 3 else "sgd"})
        store.log_metric(run_id, "acc", i / 4, step=1)
        store.log_metric(run_id, "acc", 0.0, step=0)  # an older step: latest stays i/4
        if i != 4:
            store.log_metric(run_id, "loss", 1 - i / 4)
        store.set_tag(run_id, "team.name", "vision" if i % 2 else "nlp")
        if i == 2:
            store.set_terminated(run_id, "FAILED")
        ids.append(run_id)
    store.close()
    return store, exp, ids


def _names(
    store: FileStore, exp: str, filter_string: str = "", order_by: list[str] | None = None
) -> list[str]:
    found, _ = store.search_runs([exp], filter_string, order_by)
    return [r.info.run_name for r in found]


@pytest.mark.parametrize(
    ("filter_string", "expected"),
    [
        ("", ["run-4", "run-3", "run-2", "run-1", "run-0"]),
        ("metrics.acc > 0.5", ["run-4", "run-3"]),
        ("metric.acc >= 0.5 AND params.lr = '0.1'", ["run-4", "run-2"]),
        ("metrics.loss < 1", ["run-3", "run-2", "run-1"]),  # run-4 has no loss: never matches
        ("metrics.acc != 0.25", ["run-4", "run-3", "run-2", "run-0"]),
        ("params.opt LIKE 'Ad%'", ["run-2", "run-1", "run-0"]),
        ("params.opt LIKE 'ad%'", []),
        ("params.opt ILIKE 'ad_m'", ["run-2", "run-1", "run-0"]),
        ("parameters.lr != '0.1'", ["run-3", "run-1"]),
        ("tags.`team.name` = 'vision'", ["run-3", "run-1"]),
        ('tags."team.name" = "nlp"', ["run-4", "run-2", "run-0"]),
        ("params.missing IS NULL and params.lr IS NOT NULL", ["run-4", "run-3", "run-2", "run-1", "run-0"]),
        ("attributes.status = 'FAILED'", ["run-2"]),
        ("status != 'FAILED' and run.run_name LIKE 'run-_'", ["run-4", "run-3", "run-1", "run-0"]),
        ("attribute.start_time >= 1003", ["run-4", "run-3"]),
        ("created < 1001", ["run-0"]),
        ("`Run name` = 'run-1'", ["run-1"]),
        ("metrics.acc > -1e3 and metrics.acc <= .5", ["run-2", "run-1", "run-0"]),
        ("metrics.acc > 0.1 AND metrics.acc < 0.9 and params.opt = 'Adam'", ["run-2", "run-1"]),
    ],
)
def test_filters(runs: tuple[FileStore, str, list[str]], filter_string: str, expected: list[str]) -> None:
    store, exp, _ = runs
    assert _names(store, exp, filter_string) == expected


def test_run_id_in_and_not_in(runs: tuple[FileStore, str, list[str]]) -> None:
    store, exp, ids = runs
    assert _names(store, exp, f"attributes.run_id IN ('{ids[0]}', '{ids[3]}')") == ["run-3", "run-0"]
    assert _names(store, exp, f"run_id NOT IN ('{ids[0]}')") == ["run-4", "run-3", "run-2", "run-1"]


@pytest.mark.parametrize(
    ("order_by", "expected"),
    [
        (["metrics.acc DESC"], ["run-4", "run-3", "run-2", "run-1", "run-0"]),
        (["metrics.loss"], ["run-3", "run-2", "run-1", "run-0", "run-4"]),  # missing sorts last
        (["metrics.loss DESC"], ["run-0", "run-1", "run-2", "run-3", "run-4"]),
        (["params.lr", "start_time ASC"], ["run-1", "run-3", "run-0", "run-2", "run-4"]),
        (["tags.`team.name` DESC", "metrics.acc"], ["run-1", "run-3", "run-0", "run-2", "run-4"]),
        (["run_name desc"], ["run-4", "run-3", "run-2", "run-1", "run-0"]),
    ],
)
def test_order_by(runs: tuple[FileStore, str, list[str]], order_by: list[str], expected: list[str]) -> None:
    store, exp, _ = runs
    assert _names(store, exp, "", order_by) == expected


def test_paging(runs: tuple[FileStore, str, list[str]]) -> None:
    store, exp, _ = runs
    seen, token, pages = [], None, 0
    while True:
        page, token = store.search_runs([exp], max_results=2, page_token=token)
        seen += [r.info.run_name for r in page]
        pages += 1
        if token is None:
            break
    assert pages == 3 and seen == ["run-4", "run-3", "run-2", "run-1", "run-0"]
    assert encode_page_token(1000) == "eyJvZmZzZXQiOiAxMDAwfQ=="  # MLflow's token bytes
    assert decode_page_token("eyJvZmZzZXQiOiAxMDAwfQ==") == 1000
    with pytest.raises(InvalidInputError, match="page token"):
        store.search_runs([exp], page_token="garbage!")
    with pytest.raises(InvalidInputError, match="50000"):
        store.search_runs([exp], max_results=50001)


def test_search_returns_full_run_data(runs: tuple[FileStore, str, list[str]]) -> None:
    store, exp, ids = runs
    found, _ = store.search_runs([exp], "metrics.acc = 1.0")
    assert len(found) == 1
    run = found[0]
    assert run.info.run_id == ids[4] and run.data.params == {"lr": "0.1", "opt": "sgd"}
    assert run.data.metrics == {"acc": 1.0} and run.data.tags["team.name"] == "nlp"


def test_deleted_runs_view(own_runs: tuple[FileStore, str, list[str]]) -> None:
    store, exp, ids = own_runs
    store.delete_run(ids[0])
    assert "run-0" not in _names(store, exp)
    deleted, _ = store.search_runs([exp], run_view="deleted")
    assert [r.info.run_name for r in deleted] == ["run-0"]
    everything, _ = store.search_runs([exp], run_view="all")
    assert len(everything) == 5


@pytest.mark.parametrize(
    ("filter_string", "position", "token"),
    [
        ("metrics.acc > '0.5'", 15, "'0.5'"),  # quoted number for a metric
        ("params.lr = 0.01", 13, "0.01"),  # unquoted value for a param
        ("metrics.acc > 1 OR metrics.acc < 0", 17, "OR"),
        ("metrics.acc > 1 metrics.loss < 0", 17, "metrics.loss"),
        ("experiment_id = '1'", 1, "experiment_id"),
        ("foo.bar = 'x'", 1, "foo.bar"),
        ("params.lr IN ('a')", 11, "IN"),
        ("metrics.acc IS NULL", 13, "IS NULL"),
        ("metrics.acc ~ 1", 13, "~ 1"),
        ("params.lr = 'unterminated", 13, "'unterminat"),
        ("run_id IN ('a', )", 17, ")"),
    ],
)
def test_malformed_filters_point_at_the_bad_token(filter_string: str, position: int, token: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_filter(filter_string)
    message = str(info.value)
    assert f"position {position}" in message, message
    assert token in message, message


@pytest.mark.parametrize("filter_string", ["metrics.acc >", "metrics.acc > 1 AND", "params.x IS NOT"])
def test_truncated_filters(filter_string: str) -> None:
    with pytest.raises(InvalidInputError, match="position"):
        parse_filter(filter_string)


def test_bad_order_by() -> None:
    from mlkit.tracking.search_grammar import parse_order_by

    with pytest.raises(InvalidInputError, match="lifecycle_stage"):
        parse_order_by(["lifecycle_stage"])
    with pytest.raises(InvalidInputError, match="order_by"):
        parse_order_by(["metrics.a metrics.b"])
