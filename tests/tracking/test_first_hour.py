"""Issue 14, through the real `mlkit` command: the columns `runs list` shows, names that match
nothing, read commands that find no store, and runs named by their name everywhere."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path

import pytest

from mlkit.tracking.store import FileStore

from helpers import run_mlkit, run_on_a_terminal

CNN_METRICS = {"val_accuracy": 0.97, "val_loss": 0.1, "train_loss": 0.2, "lr": 0.01, "epoch": 5.0,
               "epoch_time_s": 3.0, "samples_per_s": 900.0, "system/gpu_0_utilization_percentage": 50.0}  # fmt: skip


@pytest.fixture
def sweep(store_root: Path) -> dict[str, str]:
    """Four CNN-like runs named lr<lr>-w<width>, 20 params equal in all, and a FAILED run without
    params whose name repeats one of them."""
    store = FileStore(store_root)
    exp = store.create_experiment("cnn")
    ids = {"exp": exp}
    for i, (lr, width) in enumerate([("0.003", 32), ("0.003", 64), ("0.01", 32), ("0.01", 64)]):
        name = f"lr{lr}-w{width}"
        run_id = store.create_run(exp, run_name=name, start_time=1_700_000_000_000 + i).info.run_id
        store.log_params(run_id, {"lr": lr, "width": str(width), **{f"same{j}": "x" for j in range(20)}})
        store.log_metrics(run_id, {**CNN_METRICS, "val_accuracy": 0.9 + i / 100})
        store.set_terminated(run_id, "FINISHED")
        ids[name] = run_id
    dup = store.create_run(exp, run_name="lr0.01-w64", start_time=1_700_000_000_100).info.run_id
    store.set_terminated(dup, "FAILED")
    ids["dup"] = dup
    store.close()
    return ids


def _header(stdout: str) -> list[str]:
    return stdout.splitlines()[0].split("\t")


# ---------------------------------------------------------------------- 1. columns
def test_piped_list_shows_the_columns_a_terminal_would(sweep: dict[str, str]) -> None:
    done = run_mlkit("runs", "list", "-x", "cnn")
    assert done.returncode == 0, done.stderr
    assert _header(done.stdout) == ["run_id", "name", "status", "start", "duration", "params.lr",
                                    "params.width", "metrics.val_accuracy", "metrics.val_loss",
                                    "metrics.train_loss"]  # fmt: skip
    # the FAILED run without params does not make the 20 equal params "differ"
    assert "params.same0" not in done.stdout and "system/" not in done.stdout and "epoch" not in done.stdout
    csv_rows = list(csv.reader(io.StringIO(run_mlkit("runs", "list", "-x", "cnn", "--csv").stdout)))
    assert csv_rows[0] == _header(done.stdout) and len(csv_rows) == 6


def test_filter_and_order_by_keys_are_always_shown(sweep: dict[str, str]) -> None:
    done = run_mlkit("runs", "list", "-x", "cnn", "--order-by", "metrics.samples_per_s DESC",
                     "--filter", "params.same3 = 'x'")  # fmt: skip
    assert done.returncode == 0, done.stderr
    header = _header(done.stdout)
    assert header[5:7] == ["metrics.samples_per_s", "params.same3"]  # right after the attributes
    assert done.stderr == ""


def test_columns_by_name_glob_and_star(sweep: dict[str, str]) -> None:
    done = run_mlkit("runs", "list", "-x", "cnn", "--columns", "metrics.val_*,width", "-c", "status")
    assert done.returncode == 0, done.stderr
    assert _header(done.stdout) == ["run_id", "name", "metrics.val_accuracy", "metrics.val_loss",
                                    "params.width", "status"]  # fmt: skip
    first = done.stdout.splitlines()[1].split("\t")
    assert first[0] == sweep["dup"] and first[5] == "FAILED"  # full ids when piped
    everything = _header(run_mlkit("runs", "list", "-x", "cnn", "--columns", "*").stdout)
    assert everything[:5] == ["run_id", "name", "status", "start", "duration"]
    assert "params.same19" in everything and "metrics.system/gpu_0_utilization_percentage" in everything
    assert len(everything) == 5 + 22 + len(CNN_METRICS)
    tags = _header(run_mlkit("runs", "list", "-x", "cnn", "--columns", "tags.mlflow.runName").stdout)
    assert tags == ["run_id", "name", "tags.mlflow.runName"]


def test_terminal_shows_the_order_by_metric(sweep: dict[str, str]) -> None:
    argv = [
        sys.executable,
        "-m",
        "mlkit",
        "runs",
        "list",
        "-x",
        "cnn",
        "--order-by",
        "metrics.epoch_time_s DESC",
    ]
    for width in ("100", "80"):
        env = {**os.environ, "COLUMNS": width, "LINES": "40", "TERM": "xterm"}
        code, screen = run_on_a_terminal(argv, env=env)
        text = screen.decode(errors="replace")
        assert code == 0, text
        assert "more columns" in text and "--columns" in text
        rows = [line for line in text.splitlines() if "FINISHED" in line]
        assert len(rows) == 4 and all(line.split("│")[6].strip() == "3" for line in rows), text
    # a bookkeeping metric, shown because the order names it (folded in two at 80 columns)
    assert "metrics.epoch_time_s" in run_on_a_terminal(argv, env={**env, "COLUMNS": "100"})[1].decode()
    code, screen = run_on_a_terminal([*argv[:7], "--columns", "params.width,metrics.val_accuracy"], env=env)
    text = screen.decode(errors="replace")
    assert code == 0 and "params.width" in text and "val_accuracy" in text and "more columns" not in text


def test_compare_takes_the_same_column_names(sweep: dict[str, str]) -> None:
    done = run_mlkit("runs", "compare", "lr0.003-w32", "lr0.01-w32", "--columns", "val_*,params.lr")
    assert done.returncode == 0, done.stderr
    keys = [line.split("\t")[0] for line in done.stdout.splitlines()]
    assert keys[5:] == ["metrics.val_accuracy", "metrics.val_loss", "params.lr"]
    bad = run_mlkit("runs", "compare", "lr0.003-w32", "lr0.01-w32", "--columns", "metrics.val_acc")
    assert bad.returncode == 66 and "did you mean metrics.val_accuracy" in bad.stderr


# ---------------------------------------------------------------------- 2. names that match nothing
def test_unknown_keys_warn_with_a_suggestion(sweep: dict[str, str]) -> None:
    done = run_mlkit("runs", "list", "-x", "cnn", "--order-by", "metrics.val_acc DESC")
    assert done.returncode == 0, done.stderr
    assert (
        "warning: --order-by: no run here has metrics.val_acc; did you mean metrics.val_accuracy?"
        in done.stderr
    )
    done = run_mlkit("runs", "list", "-x", "cnn", "--filter", "params.widht = '32'")
    assert done.returncode == 0
    assert "--filter: no run here has params.widht; did you mean params.width?" in done.stderr
    assert "No runs match." in done.stderr
    done = run_mlkit("runs", "list", "-x", "cnn", "--columns", "metrics.val_acc,lr")
    assert done.returncode == 0 and _header(done.stdout) == ["run_id", "name", "params.lr", "metrics.lr"]
    assert "--columns: no run here has metrics.val_acc; did you mean metrics.val_accuracy?" in done.stderr
    # a key some run in scope has is no warning, even when the filter matches nothing
    quiet = run_mlkit("runs", "list", "-x", "cnn", "--filter", "metrics.val_accuracy > 5")
    assert quiet.returncode == 0 and "warning" not in quiet.stderr


def test_compare_metric_and_promote_if_better_suggest_the_key(sweep: dict[str, str]) -> None:
    bad = run_mlkit("runs", "compare", "lr0.003-w32", "lr0.01-w32", "--metric", "val_acc")
    assert bad.returncode == 0 and "did you mean metrics.val_accuracy?" in bad.stderr  # a warning
    promote = run_mlkit("models", "promote", "cnn", "--from-run", "lr0.003-w64",
                        "--if-better", "metrics.val_acc > champion")  # fmt: skip
    assert promote.returncode == 2, promote.stderr
    assert f"run {sweep['lr0.003-w64']} has no metric 'val_acc'" in promote.stderr
    assert "did you mean metrics.val_accuracy?" in promote.stderr


# ---------------------------------------------------------------------- 5. no store, nothing created
@pytest.mark.parametrize(
    "argv",
    [["runs", "list"], ["experiments", "list"], ["runs", "show", "abcdef"], ["runs", "logs", "abcdef"],
     ["runs", "compare", "abcdef", "123456"], ["report", "-e", "Default"], ["gc", "--dry-run"]],
    ids=" ".join,
)  # fmt: skip
def test_read_commands_create_no_store(tmp_path: Path, argv: list[str]) -> None:
    here = tmp_path / "elsewhere"
    here.mkdir()
    done = run_mlkit(*argv, cwd=here, env={"MLKIT_TRACKING_URI": "", "MLFLOW_TRACKING_URI": ""})
    assert done.returncode == 66, done.stderr
    assert f"no tracking store at {here / 'mlruns'} (the default, ./mlruns)" in done.stderr
    assert "--store PATH or MLKIT_TRACKING_URI" in done.stderr and "Traceback" not in done.stderr
    assert "No runs match" not in done.stderr and done.stdout == ""
    assert list(here.iterdir()) == []


def test_no_store_at_store_or_env_path_and_an_empty_dir(tmp_path: Path, store_root: Path) -> None:
    done = run_mlkit("runs", "list")  # conftest points MLKIT_TRACKING_URI at a path not created
    assert done.returncode == 66 and "(MLKIT_TRACKING_URI)" in done.stderr and not store_root.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    done = run_mlkit("experiments", "list", "--store", str(empty))
    assert done.returncode == 66 and "(--store): the path is not a tracking store" in done.stderr
    assert list(empty.iterdir()) == []
    created = run_mlkit("experiments", "create", "first", "--store", str(empty))  # a write creates it
    assert created.returncode == 0, created.stderr
    listed = run_mlkit("experiments", "list", "--json", "--store", str(empty))
    assert {e["name"] for e in json.loads(listed.stdout)} == {"Default", "first"}


# ---------------------------------------------------------------------- 7. a run by its name
def test_every_run_command_takes_a_name(sweep: dict[str, str], store_root: Path) -> None:
    run_id = sweep["lr0.003-w32"]
    shown = run_mlkit("runs", "show", "lr0.003-w32", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["run_id"] == run_id
    logs = FileStore(store_root).artifact_dir(run_id) / "logs"
    logs.mkdir(parents=True)
    (logs / "output.log").write_text("hello\n")
    assert run_mlkit("runs", "logs", "lr0.003-w32").stdout == "hello\n"
    assert run_mlkit("runs", "delete", "lr0.003-w32").returncode == 0
    assert FileStore(store_root).get_run(run_id).info.lifecycle_stage == "deleted"
    assert run_mlkit("runs", "restore", "lr0.003-w32").returncode == 0
    assert FileStore(store_root).get_run(run_id).info.lifecycle_stage == "active"
    compared = run_mlkit("runs", "compare", "lr0.003-w32", sweep["lr0.01-w32"][:8], "--json")
    assert [r["run_id"] for r in json.loads(compared.stdout)["runs"]] == [run_id, sweep["lr0.01-w32"]]
    report = run_mlkit("report", "-e", "cnn", "--runs", "lr0.003-w32", "-o", str(store_root.parent / "r.html"),
                       "--json")  # fmt: skip
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["runs"] == [run_id]


def test_an_ambiguous_name_is_one_error_listing_the_candidates(sweep: dict[str, str]) -> None:
    for argv in (["runs", "show", "lr0.01-w64"], ["runs", "delete", "lr0.01-w64"],
                 ["runs", "compare", "lr0.01-w64", "lr0.003-w32"],
                 ["models", "promote", "cnn", "--from-run", "lr0.01-w64", "--if-better", "metrics.val_loss < champion"]):  # fmt: skip
        done = run_mlkit(*argv)
        assert done.returncode == 2, (argv, done.stderr)
        assert "run 'lr0.01-w64' matches 2 runs" in done.stderr, argv
        assert sweep["lr0.01-w64"][:12] in done.stderr and sweep["dup"][:12] in done.stderr
        assert "FAILED" in done.stderr and "FINISHED" in done.stderr
    # a full id always wins; a unique prefix still works; a miss names the store
    assert run_mlkit("runs", "show", sweep["dup"]).returncode == 0
    assert run_mlkit("runs", "show", sweep["dup"][:7]).returncode == 0
    missing = run_mlkit("runs", "show", "no-such-run")
    assert missing.returncode == 66 and "no run 'no-such-run'" in missing.stderr
