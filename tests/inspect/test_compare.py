"""`mlkit runs compare`: the table, --only-changed, --csv, --json and the terminal curves."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from inspect_support import XSS_NAME, XSS_PARAM, SweepStore
from typer.testing import CliRunner

from mlkit.cli import app
from mlkit.errors import NotFoundError, UsageError
from mlkit.report.compare import compare_runs
from mlkit.tracking.store import FileStore

from helpers import REPO, run_mlkit


def invoke(*args: str):
    """The CLI in-process (stdout is not a terminal, as under cron)."""
    return CliRunner().invoke(app, list(args))


def test_compare_rows_follow_the_runs_given(sweep: SweepStore):
    a, b, c = sweep.run_ids
    result = compare_runs(sweep.store, [c[:8], a[:10], b])
    assert [r.run_id for r in result.runs] == [c, a, b]
    rows = {row.name: row for row in result.rows}
    assert rows["params.lr"].values == ["0.001", "0.1", "0.01"] and rows["params.lr"].changed
    assert rows["params.batch_size"].values == ["64", "64", "64"] and not rows["params.batch_size"].changed
    assert rows["params.optimizer"].values[2] == XSS_PARAM
    assert rows["metrics.val_acc"].values == pytest.approx([0.7 + 0.38, 0.5 + 0.38, 0.6 + 0.38])
    assert "metrics.system/cpu_utilization_percentage" not in rows  # only with system=True
    assert rows["run_name"].values[2] == XSS_NAME

    changed = compare_runs(sweep.store, [a, b, c], only_changed=True)
    names = [row.name for row in changed.rows]
    assert "params.batch_size" not in names and "status" not in names
    assert {"run_name", "params.lr", "params.optimizer", "metrics.val_acc", "metrics.train_loss"} <= set(
        names
    )
    assert changed.hidden_rows == 4  # batch_size, status, experiment_id, duration_s

    with_system = compare_runs(sweep.store, [a, b], system=True, curve_metrics=["val_acc"])
    assert with_system.rows[-1].name == "metrics.system/cpu_utilization_percentage"  # system rows last
    (curves,) = with_system.curves
    assert curves.x == "step" and [s.run_id for s in curves.series] == [a, b]
    assert curves.series[0].steps == list(range(20))
    assert curves.series[1].values[-1] == pytest.approx(0.6 + 0.38)


def test_compare_resolves_names_and_rejects_bad_input(sweep: SweepStore):
    a, b, _ = sweep.run_ids
    assert [r.run_id for r in compare_runs(sweep.store, ["lr-0.1", b]).runs] == [a, b]
    with pytest.raises(UsageError, match="at least 2 runs"):
        compare_runs(sweep.store, [a])
    with pytest.raises(UsageError, match="given twice"):
        compare_runs(sweep.store, [a, a[:8]])
    with pytest.raises(NotFoundError, match="no run 'nosuchrun'"):
        compare_runs(sweep.store, [a, "nosuchrun"])
    # a --metric no run logged is no error: it is reported (with the nearest keys) and not drawn
    partly = compare_runs(sweep.store, [a, b], curve_metrics=["val_acc", "bleu", "trian_loss"])
    assert [c.key for c in partly.curves] == ["val_acc"]
    assert [(u.name, u.suggestions) for u in partly.unknown_metrics] == [
        ("metrics.bleu", ()),
        ("metrics.trian_loss", ("metrics.train_loss",)),
    ]


def test_cli_plain_table_and_chart_without_a_terminal(sweep: SweepStore):
    a, b, c = sweep.run_ids
    result = run_mlkit("runs", "compare", a[:8], b[:8], c[:8], "--only-changed", "--metric", "val_acc")
    assert result.returncode == 0, result.stderr
    assert "\x1b[" not in result.stdout + result.stderr  # no colour codes
    lines = result.stdout.splitlines()
    assert lines[0].split("\t") == [
        "key",
        f"lr-0.1 ({a[:8]})",
        f"{XSS_NAME} ({b[:8]})",
        f"lr-0.001 ({c[:8]})",
    ]
    table = {line.split("\t")[0]: line.split("\t")[1:] for line in lines[1 : lines.index("")]}
    assert table["params.lr"] == ["0.1", "0.01", "0.001"]
    assert "params.batch_size" not in table
    assert "4 row(s) equal in every run hidden" in result.stderr
    chart = lines[lines.index("val_acc") :]
    plot = [line.split("|", 1)[1] if "|" in line else line.split("+", 1)[1] for line in chart[1:13]]
    # one marker per run; lr 0.001's curve (marker '+') is the highest: top row, right end
    assert {"*", "o", "+"} <= set("".join(plot))
    assert plot[0].rstrip().endswith("+")
    assert chart[1].lstrip().startswith("1.08") and chart[12].lstrip().startswith("0.5")
    assert chart[-1].split() == [
        "*",
        "lr-0.1",
        f"({a[:8]})",
        "o",
        *XSS_NAME.split(),
        f"({b[:8]})",
        "+",
        "lr-0.001",
        f"({c[:8]})",
    ]


def test_cli_csv_and_json(sweep: SweepStore):
    a, b, c = sweep.run_ids
    result = invoke("runs", "compare", a, b, c, "--csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["key", a, b, c]
    by_key = {row[0]: row[1:] for row in rows[1:]}
    assert by_key["params.optimizer"] == ["adam", XSS_PARAM, "adam"]
    assert [float(v) for v in by_key["metrics.val_acc"]] == pytest.approx([0.88, 0.98, 1.08])
    assert by_key["status"] == ["FINISHED"] * 3

    result = invoke("runs", "compare", a, b, "--json", "--only-changed", "--metric", "train_loss")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [r["run_id"] for r in doc["runs"]] == [a, b]
    assert {row["key"] for row in doc["rows"] if row["section"] == "params"} == {"lr", "epochs", "optimizer"}
    (curves,) = doc["curves"]
    assert curves["key"] == "train_loss" and curves["series"][0]["steps"] == list(range(20))
    assert "4 row(s) equal" in result.stderr

    bad = invoke("runs", "compare", a, "--csv")
    assert bad.exit_code == 2 and "at least 2 runs" in bad.stderr and bad.stdout == ""


def test_nan_metrics_become_null_in_json(store_root: Path):
    store = FileStore(store_root)
    ids = []
    for value in (float("nan"), 1.5):
        run = store.create_run("0")
        store.log_metric(run.info.run_id, "loss", value)
        ids.append(run.info.run_id)
    result = invoke("runs", "compare", *ids, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)  # strict JSON: no NaN literal
    assert [row["values"] for row in doc["rows"] if row["key"] == "loss"] == [[None, 1.5]]


@pytest.mark.slow
@pytest.mark.torch
def test_compare_three_real_cnn_smoke_runs(tmp_path: Path):
    pytest.importorskip("torch")
    env = {"MLKIT_TRACKING_URI": str(tmp_path / "mlruns")}
    project = str(REPO / "projects" / "cnn")
    procs = [  # three at once, as a shell script would start them
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlkit",
                "run",
                project,
                "-e",
                "smoke",
                "--env-manager",
                "local",
                "-P",
                f"width={width}",
                "-P",
                "device=cpu",
            ],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for width in (4, 6, 8)
    ]
    for proc in procs:
        output, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, output[-3000:]
    runs = FileStore(tmp_path / "mlruns").search_runs(["0"])[0]
    runs.sort(key=lambda r: int(r.data.params["width"]))
    ids = [r.info.run_id for r in runs]
    assert len(ids) == 3
    result = run_mlkit("runs", "compare", *ids, "--only-changed", "--metric", "val_loss", env=env)
    assert result.returncode == 0, result.stderr
    table = {
        line.split("\t")[0]: line.split("\t")[1:] for line in result.stdout.splitlines()[1:] if "\t" in line
    }
    assert table["params.width"] == ["4", "6", "8"]
    assert "params.epochs" not in table and "params.lr" not in table  # equal in all three
    assert all(float(v) > 0 for v in table["metrics.val_loss"])
    assert "val_loss" in result.stdout.splitlines() and "(step)" in result.stdout
    doc = json.loads(run_mlkit("runs", "compare", *ids, "--json", env=env).stdout)
    assert {row["key"] for row in doc["rows"] if row["section"] == "params"} >= {"width", "epochs", "lr"}
    out = tmp_path / "report.html"  # the report of real runs too (checked in detail in test_report)
    report = run_mlkit("report", "-e", "Default", "-o", str(out), env=env)
    assert report.returncode == 0, report.stderr
    page = out.read_text()
    assert 'data-metric="val_loss"' in page and ids[0] in page
