"""`mlkit runs list` on a real terminal: a readable table, not every column squeezed to nothing."""

from __future__ import annotations

import os
import sys

from mlkit.cli.runs import _fit_width
from mlkit.tracking.store import FileStore

from helpers import run_on_a_terminal


def test_fit_width_keeps_the_fixed_columns_and_cuts_the_rest():
    columns = ["run_id", "name", "status", "start", "duration", "metrics.a", "metrics.b"]
    rows = [["abcdef12", "n", "FINISHED", "2026-01-01 00:00:00", "1s", "0.5", "0.25"]]
    kept, kept_rows, cut = _fit_width(columns, rows, width=60)
    assert kept[:5] == columns[:5] and cut == len(columns) - len(kept) and cut >= 1
    assert kept_rows == [rows[0][: len(kept)]]
    assert _fit_width(columns, rows, width=500)[2] == 0


def test_runs_list_on_a_terminal_shows_what_tells_runs_apart(store_root):
    store = FileStore(store_root)
    for lr in ("0.1", "0.01"):
        run_id = store.create_run("0").info.run_id
        store.log_params(run_id, {"lr": lr, "seed": "0", **{f"p{i}": "same" for i in range(30)}})
        store.log_metrics(run_id, {"val_acc": 0.9, "loss": 0.2, "system/gpu_0_power_usage_watts": 70.0})
        store.set_terminated(run_id, "FINISHED")

    env = {**os.environ, "COLUMNS": "120", "LINES": "40", "TERM": "xterm"}
    code, screen = run_on_a_terminal([sys.executable, "-m", "mlkit", "runs", "list"], env=env)
    text = screen.decode(errors="replace")
    assert code == 0
    assert "params.lr" in text and "metrics.val_acc" in text  # differs across runs / the model's metric
    assert "params.p0" not in text and "system/" not in text  # equal everywhere / system metrics
    assert "more columns" in text
