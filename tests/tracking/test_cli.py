"""`mlkit runs` and `mlkit experiments` through the real command (python -m mlkit)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlkit.tracking.store import FileStore

from helpers import run_mlkit


@pytest.fixture
def populated(store_root: Path) -> dict[str, str]:
    store = FileStore(store_root)
    exp = store.create_experiment("cli")
    ids = {}
    for i, status in enumerate(["FINISHED", "FAILED", "FINISHED"]):
        run_id = store.create_run(exp, run_name=f"r{i}", start_time=1_700_000_000_000 + i).info.run_id
        store.log_param(run_id, "lr", f"0.{i}")
        for step in range(i + 1):
            store.log_metric(run_id, "acc", i / 10 + step / 100, step=step)
        store.set_terminated(run_id, status, end_time=1_700_000_060_000 + i)
        ids[f"r{i}"] = run_id
    logs = store.artifact_dir(ids["r0"]) / "logs"
    logs.mkdir(parents=True)
    (logs / "output.log").write_text("epoch 1\nepoch 2\n")
    store.close()
    ids["exp"] = exp
    return ids


def test_runs_list_json_filter_and_order(populated: dict[str, str]) -> None:
    done = run_mlkit("runs", "list", "--experiment", "cli", "--filter", "metrics.acc > 0.05",
                     "--order-by", "metrics.acc DESC", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)  # exactly one document
    assert [r["run_name"] for r in doc] == ["r2", "r1"]
    assert doc[0]["params"] == {"lr": "0.2"} and doc[0]["metrics"] == {"acc": 0.22}
    assert doc[0]["duration_s"] == 60.0


def test_runs_list_tsv_status_and_csv(populated: dict[str, str]) -> None:
    done = run_mlkit("runs", "list", "-x", populated["exp"], "--status", "failed")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    header = lines[0].split("\t")
    assert header[:5] == ["run_id", "name", "status", "start", "duration"]
    assert len(lines) == 2 and lines[1].split("\t")[:3] == [populated["r1"], "r1", "FAILED"]
    assert "\x1b[" not in done.stdout
    csv_out = run_mlkit("runs", "list", "--csv", "--since", "10000d").stdout.splitlines()
    assert csv_out[0].startswith("run_id,name,status") and len(csv_out) == 4


def test_runs_show_json_and_prefix(populated: dict[str, str]) -> None:
    done = run_mlkit("runs", "show", populated["r2"][:8], "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["run_id"] == populated["r2"] and doc["status"] == "FINISHED"
    assert doc["metrics"]["acc"] == {"latest": 0.22, "step": 2, "timestamp": doc["metrics"]["acc"]["timestamp"],
                                     "count": 3}  # fmt: skip
    assert doc["params"] == {"lr": "0.2"} and doc["tags"]["mlflow.runName"] == "r2"


def test_runs_logs(populated: dict[str, str]) -> None:
    done = run_mlkit("runs", "logs", populated["r0"])
    assert done.returncode == 0 and done.stdout == "epoch 1\nepoch 2\n"
    missing = run_mlkit("runs", "logs", populated["r1"])
    assert missing.returncode == 66 and "no log" in missing.stderr


def test_not_found_and_bad_input_exit_codes(populated: dict[str, str]) -> None:
    assert run_mlkit("runs", "show", "ffffffffff").returncode == 66
    assert run_mlkit("runs", "list", "--experiment", "nope").returncode == 66
    bad = run_mlkit("runs", "list", "--filter", "metrics.acc >> 1")
    assert bad.returncode == 2 and "position 14" in bad.stderr
    assert run_mlkit("runs", "list", "--since", "yesterday").returncode == 2


def test_delete_restore_and_experiments(populated: dict[str, str], store_root: Path) -> None:
    assert run_mlkit("runs", "delete", populated["r0"], populated["r1"][:10]).returncode == 0
    listed = json.loads(run_mlkit("runs", "list", "--json").stdout)
    assert [r["run_name"] for r in listed] == ["r2"]
    everything = json.loads(run_mlkit("runs", "list", "--all", "--json").stdout)
    assert len(everything) == 3
    assert run_mlkit("runs", "restore", populated["r0"]).returncode == 0
    assert FileStore(store_root).get_run(populated["r0"]).info.lifecycle_stage == "active"
    created = run_mlkit("experiments", "create", "new-exp", "--json")
    assert created.returncode == 0, created.stderr
    new_id = json.loads(created.stdout)["experiment_id"]
    exps = json.loads(run_mlkit("experiments", "list", "--json").stdout)
    assert {e["name"]: e["runs"] for e in exps} == {"new-exp": 0, "cli": 3, "Default": 0}
    assert run_mlkit("experiments", "delete", "new-exp").returncode == 0
    assert (store_root / ".trash" / new_id).is_dir()
    assert run_mlkit("experiments", "restore", new_id).returncode == 0
    assert run_mlkit("experiments", "create", "cli").returncode == 2


def test_runs_logs_follow_until_the_run_ends(store_root: Path) -> None:
    import os
    import subprocess
    import sys
    import time

    store = FileStore(store_root)
    run_id = store.create_run("0").info.run_id
    log = store.artifact_dir(run_id) / "logs" / "output.log"
    log.parent.mkdir(parents=True)
    log.write_text("line 1\n")
    follow = subprocess.Popen([sys.executable, "-m", "mlkit", "runs", "logs", run_id, "--follow", "--interval", "0.1"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))  # fmt: skip
    time.sleep(1.0)
    with open(log, "a") as fh:
        fh.write("line 2\n")
    time.sleep(0.5)
    assert follow.poll() is None  # still following while the run is RUNNING
    store.set_terminated(run_id, "FINISHED")
    out, err = follow.communicate(timeout=30)
    assert follow.returncode == 0, err
    assert out == "line 1\nline 2\n"


def test_an_experiment_ref_that_is_one_id_and_another_name_is_refused(store_root: Path) -> None:
    """`experiments delete 1` where experiment 1 is "a" and the experiment named "1" is another:
    refused (exit 2, both named), never one picked silently; each is still reachable."""
    store = FileStore(store_root)
    first = store.create_experiment("a")
    named = store.create_experiment(first)  # an experiment whose name is the other's id
    done = run_mlkit("experiments", "delete", first, "--store", str(store_root))
    assert done.returncode == 2, done.stderr
    assert f"experiment {named}'s name" in done.stderr and "Traceback" not in done.stderr
    assert {e.experiment_id for e in FileStore(store_root).list_experiments()} >= {first, named}
    assert run_mlkit("experiments", "delete", "a", "--store", str(store_root)).returncode == 0
    assert [e.experiment_id for e in FileStore(store_root).list_experiments("deleted")] == [first]


def test_piped_listings_keep_one_line_a_run_whatever_the_values(store_root: Path) -> None:
    """A run name with a newline, a param with a tab: piped (tab-separated) output escapes them as
    \\n and \\t, so `cut -f` and `wc -l` still see one line a run and one column a field."""
    store = FileStore(store_root)
    odd = store.create_run("0", run_name="two\nlines").info.run_id
    store.log_param(odd, "p", "a\tb")
    plain = store.create_run("0", run_name="plain").info.run_id
    store.log_param(plain, "p", "c")
    for args in (["runs", "list"], ["experiments", "list"]):
        done = run_mlkit(*args, "--store", str(store_root))
        lines = done.stdout.splitlines()
        assert done.returncode == 0 and all(line.count("\t") == lines[0].count("\t") for line in lines), lines
    listed = run_mlkit("runs", "list", "--store", str(store_root)).stdout.splitlines()
    assert len(listed) == 3 and any("two\\nlines" in line and "a\\tb" in line for line in listed), listed
