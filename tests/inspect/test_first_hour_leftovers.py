"""Issue 14, the rest, through the real `mlkit` command: a `--metric` no run logged is a warning
with "did you mean" (`runs compare`; `gc --keep-best` refuses to remove anything by it), the
terminal chart's x axis in wall time or whole steps, and run names inside `runs:/` URIs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlkit.tracking.registry import RegistryStore
from mlkit.tracking.store import FileStore

from helpers import run_mlkit

T0 = 1_700_000_000_000  # epoch ms
DAY_MS = 86_400_000


@pytest.fixture
def runs(store_root: Path) -> dict[str, str]:
    """Three finished runs named lr<lr>-w32 (one name twice), each with a model directory, a
    val_accuracy history over steps 0..120000 and a system metric sampled over 1h02m03s."""
    store = FileStore(store_root)
    exp = store.create_experiment("cnn")
    ids: dict[str, str] = {"exp": exp}
    for i, name in enumerate(["lr0.003-w32", "lr0.01-w32", "lr0.01-w32"]):
        start = T0 - 100 * DAY_MS + i * 1000
        run_id = store.create_run(exp, run_name=name, start_time=start).info.run_id
        store.log_params(run_id, {"lr": name[2:-4], "width": "32"})
        for j, step in enumerate(range(0, 120_001, 20_000)):
            store.log_metric(run_id, "val_accuracy", 0.5 + j / 20 + i / 100, step=step, timestamp=start + j)
        for j, seconds in enumerate((0, 1800, 3723)):
            store.log_metric(run_id, "system/cpu_utilization_percentage", 10.0 + j + i, step=j,
                             timestamp=start + seconds * 1000)  # fmt: skip
        model = store.artifact_dir(run_id) / "model"
        model.mkdir(parents=True)
        (model / "MLmodel").write_text(f"artifact_path: model\nflavors: {{}}\nrun_id: {run_id}\n")
        store.set_terminated(run_id, "FINISHED", end_time=start + 3_723_000)
        ids[name if name not in ids else "dup"] = run_id
    store.close()
    return ids


# ---------------------------------------------------------------------- --metric no run logged
def test_compare_warns_on_an_unknown_metric_and_draws_the_others(runs: dict[str, str]) -> None:
    done = run_mlkit("runs", "compare", "lr0.003-w32", runs["lr0.01-w32"], "--metric", "val_acc",
                     "--metric", "val_accuracy")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "warning: --metric: no run here has metrics.val_acc; did you mean metrics.val_accuracy?"
    ]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("key\tlr0.003-w32") and "params.lr\t0.003\t0.01" in lines
    assert "val_accuracy" in lines and "val_acc" not in lines  # the known metric's chart only
    assert "(no chart" not in done.stdout


def test_compare_with_only_unknown_metrics_says_there_is_no_chart(runs: dict[str, str]) -> None:
    done = run_mlkit("runs", "compare", "lr0.003-w32", runs["lr0.01-w32"], "-m", "val_acc", "-m", "zzz")
    assert done.returncode == 0, done.stderr
    assert "did you mean metrics.val_accuracy?" in done.stderr
    assert "warning: --metric: no run here has metrics.zzz; see `mlkit runs show RUN`" in done.stderr
    assert "metrics.val_accuracy\t" in done.stdout  # the table is still there
    assert done.stdout.rstrip().endswith("(no chart: none of these runs logged val_acc, zzz)")

    doc = run_mlkit("runs", "compare", "lr0.003-w32", runs["lr0.01-w32"], "-m", "val_acc", "--json")
    assert doc.returncode == 0, doc.stderr
    parsed = json.loads(doc.stdout)
    assert parsed["curves"] == []
    assert parsed["unknown_metrics"] == [
        {"flag": "--metric", "name": "metrics.val_acc", "suggestions": ["metrics.val_accuracy"]}
    ]
    assert "did you mean metrics.val_accuracy?" in doc.stderr


def test_gc_keep_best_by_an_unknown_metric_warns_on_a_dry_run_and_refuses_otherwise(
    runs: dict[str, str], store_root: Path
) -> None:
    argv = ["gc", "--keep-best", "1", "--metric", "val_acc", "--max"]
    dry = run_mlkit(*argv, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "warning: --metric: no run here has metrics.val_acc; did you mean metrics.val_accuracy?" in (
        dry.stderr
    )
    assert "Dry run: 3 item(s) would be removed" in dry.stdout  # what the typo would cost

    real = run_mlkit(*argv)
    assert real.returncode == 2, real.stderr
    assert "did you mean metrics.val_accuracy?" in real.stderr and "nothing was removed" in real.stderr
    assert real.stdout == ""
    store = FileStore(store_root)
    for name in ("lr0.003-w32", "lr0.01-w32", "dup"):
        assert store.get_run(runs[name]).info.status == "FINISHED"  # all still there

    right = run_mlkit("gc", "--keep-best", "1", "--metric", "val_accuracy", "--max", "--json")
    assert right.returncode == 0, right.stderr
    assert "warning" not in right.stderr
    doc = json.loads(right.stdout)
    assert doc["unknown_metric"] is None
    assert {i["run_id"] for i in doc["items"]} == {runs["lr0.003-w32"], runs["lr0.01-w32"]}


# ---------------------------------------------------------------------- the chart's x axis
def _x_axis(stdout: str, title: str) -> list[str]:
    lines = stdout.splitlines()
    chart = lines[lines.index(title) :]
    return chart[14].split()  # title, 12 rows, the axis line, then the x labels


def test_chart_x_axis_in_whole_steps_and_system_metrics_in_wall_time(runs: dict[str, str]) -> None:
    done = run_mlkit("runs", "compare", "lr0.003-w32", runs["dup"], "--metric", "val_accuracy",
                     "--metric", "system/cpu_utilization_percentage", "--width", "40")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert _x_axis(done.stdout, "val_accuracy") == ["0", "120000", "(step)"]
    assert _x_axis(done.stdout, "system/cpu_utilization_percentage") == ["0:00", "1:02:03", "(time)"]
    doc = json.loads(run_mlkit("runs", "compare", "lr0.003-w32", runs["dup"], "--json",
                               "-m", "system/cpu_utilization_percentage").stdout)  # fmt: skip
    assert doc["curves"][0]["x"] == "seconds"  # system metrics: time, whatever their step


# ---------------------------------------------------------------------- run names in runs:/ URIs
def test_register_a_model_by_the_run_name_in_its_uri(runs: dict[str, str], store_root: Path) -> None:
    done = run_mlkit("models", "register", "runs:/lr0.003-w32/model", "cnn", "--json")
    assert done.returncode == 0, done.stderr
    version = RegistryStore(store_root).get_model_version("cnn", 1)
    assert version.run_id == runs["lr0.003-w32"]
    assert version.source == f"runs:/{runs['lr0.003-w32']}/model"  # the id is stored, not the name
    prefix = run_mlkit("models", "register", f"runs:/{runs['dup'][:8]}/model", "cnn")
    assert prefix.returncode == 0, prefix.stderr
    assert RegistryStore(store_root).get_model_version("cnn", 2).run_id == runs["dup"]

    two = run_mlkit("models", "register", "runs:/lr0.01-w32/model", "cnn")
    assert two.returncode == 2 and "matches 2 runs" in two.stderr
    assert runs["lr0.01-w32"][:12] in two.stderr and runs["dup"][:12] in two.stderr
    none = run_mlkit("models", "register", "runs:/lr0.1-w32/model", "cnn")
    assert none.returncode == 66 and "no run 'lr0.1-w32'" in none.stderr
    dots = run_mlkit("models", "register", "runs:/../model", "cnn")
    assert dots.returncode == 2 and "invalid model URI" in dots.stderr
