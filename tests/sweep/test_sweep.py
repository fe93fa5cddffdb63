"""`mlkit sweep` with real trial processes (each a real `mlkit run --run-id` supervisor) on the
stand-in NVML with four GPUs: filling GPUs without double booking, search, pruning, resume, stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sweep.sweeptools import sweep_id_of, wait_for

from mlkit.proc import mlkit_argv

from helpers import plant_mlkit, run_mlkit

pytestmark = pytest.mark.sweep


def _trials(store, sweep_id: str) -> list:
    from mlkit.sweep.records import trial_runs

    return trial_runs(store, sweep_id)


def test_grid_parallel_4_never_overbooks_and_mlflow_sees_the_nesting(
    project, seen, sweep, store, store_root, monkeypatch
):
    result, doc = sweep(str(project), "-P", "x=0,0.3,0.6", "-P", "steps=1,2", "-P", "sleep=2.5",
                        "--parallel", "4", "--gpus-per-trial", "1", "--metric", "loss")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert doc["method"] == "grid" and doc["planned"] == 6
    assert [t["status"] for t in doc["trials"]] == ["FINISHED"] * 6
    sweep_id = doc["sweep_id"]
    records = seen()
    assert len(records) == 6
    runs = {r.info.run_id: r for r in _trials(store, sweep_id)}
    assert len(runs) == 6 and {r["run_id"] for r in records} == set(runs)
    for rec in records:  # what each trial saw is what its own lease in the ledger said
        assert rec["cvd"] == runs[rec["run_id"]].data.tags["mlkit.gpu.uuids"]
        assert rec["cvd"].startswith("GPU-") and "," not in rec["cvd"]
    events = sorted(
        [(r["start"], 1, r) for r in records] + [(r["end"], -1, r) for r in records], key=lambda e: e[:2]
    )
    running: list[dict] = []
    peak = 0
    for _, kind, rec in events:
        if kind < 0:
            running.remove(rec)
            continue
        assert rec["cvd"] not in {r["cvd"] for r in running}, "two trials on one GPU at once"
        running.append(rec)
        peak = max(peak, len(running))
    # 4 at once (they overlap for seconds: each sleeps 2.5 s per step), never more: 2 rounds for 6 trials
    assert peak == 4
    from mlkit.gpu.ledger import leased_run_ids

    assert not set(leased_run_ids()) & set(runs)  # every lease went back to the ledger
    # the best row first: x=0.3 with 2 steps has the lowest final loss
    assert doc["trials"][0]["params"] == {"x": "0.3", "steps": "2"}

    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = mlflow.tracking.MlflowClient(tracking_uri=store_root.as_uri())
    parent = client.get_run(sweep_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["mlkit.sweep.method"] == "grid"
    assert parent.data.tags["mlkit.sweep.metric"] == "loss"
    assert parent.data.tags["mlkit.sweep.direction"] == "minimize"
    exp = parent.info.experiment_id
    children = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{sweep_id}'")
    assert {c.info.run_id for c in children} == set(runs)
    assert all(c.info.status == "FINISHED" and "mlkit.sweep.trial_key" in c.data.tags for c in children)
    assert len({c.data.tags["mlkit.sweep.trial_key"] for c in children}) == 6


def test_cpu_trials_without_gpus(project, seen, sweep, monkeypatch):
    monkeypatch.setenv("MLKIT_FAKE_NVML", "no_driver")
    result, doc = sweep(str(project), "-P", "x=0,1", "--parallel", "2")
    assert result.returncode == 0, result.stderr
    assert [t["status"] for t in doc["trials"]] == ["FINISHED", "FINISHED"]
    assert all(r["cvd"] in (None, "") for r in seen())


def test_random_with_a_seed_picks_the_same_values_twice(project, sweep):
    args = (
        "-P",
        "x=uniform(-1,1)",
        "-P",
        "steps=int(1,3)",
        "--method",
        "random",
        "--trials",
        "3",
        "--parallel",
        "2",
    )
    picks = []
    for seed in ("7", "7", "8"):
        result, doc = sweep(str(project), *args, "--seed", seed)
        assert result.returncode == 0, result.stderr
        picks.append(sorted((t["params"]["x"], t["params"]["steps"]) for t in doc["trials"]))
    assert picks[0] == picks[1]
    assert picks[0] != picks[2]
    assert len(set(picks[0])) == 3


def test_optuna_tpe_finds_the_minimum(project, sweep, store):
    # loss = (x-0.3)^2 + 1 after one step. TPE (seeded, one trial at a time, so the run is
    # deterministic) must get x within 0.1 of 0.3 in 16 trials, and with one of its own suggestions:
    # the best trial comes after its 10 random start-up trials.
    result, doc = sweep(str(project), "-P", "x=uniform(-2,2)", "-P", "steps=1", "--trials", "16", "--seed", "0",
                        "--metric", "loss", "--parallel", "1", "--gpus-per-trial", "0", timeout=240)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert doc["method"] == "tpe" and len(doc["trials"]) == 16
    best = doc["trials"][0]
    assert abs(float(best["params"]["x"]) - 0.3) < 0.1, best
    assert best["slot"] >= 10, best
    assert best["metric"] == pytest.approx((float(best["params"]["x"]) - 0.3) ** 2 + 1.0)
    # the study is a journal file inside the sweep's run: 16 COMPLETE trials
    import optuna

    path = Path(store.artifact_dir(doc["sweep_id"])) / "sweep" / "study.journal"
    storage = optuna.storages.journal.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    study = optuna.load_study(study_name=doc["sweep_id"], storage=storage)
    assert len([t for t in study.trials if t.state.name == "COMPLETE"]) == 16
    assert study.best_value == pytest.approx(best["metric"])


def _assert_pruned(store, row: dict, steps: int):
    """A `sweep show --json` row of a pruned trial: KILLED/pruned, stopped before its last step."""
    assert row["status"] == "pruned" and row["failure_reason"] == "pruned"
    run = store.get_run(row["run_id"])
    assert run.info.status == "KILLED" and run.data.tags["mlkit.failure_reason"] == "pruned"
    assert len(store.get_metric_history(row["run_id"], "loss")) < steps  # stopped before its end
    return run


def test_median_pruning_stops_the_clearly_worse_trials(project, sweep, store, store_root, monkeypatch):
    # One at a time, in grid order: the two good trials finish; then x=3 and x=4 are far above the
    # median of the finished ones at every step, so each is stopped at its first steps.
    result, doc = sweep(str(project), "-P", "x=0.3,0.35,3,4", "-P", "steps=10", "-P", "sleep=0.15", "--parallel", "1",
                        "--metric", "loss", "--prune", "median", "--prune-startup", "2", "--gpus-per-trial", "0")  # fmt: skip
    assert result.returncode == 0, result.stderr
    by_x = {t["params"]["x"]: t for t in doc["trials"]}
    assert by_x["0.3"]["status"] == by_x["0.35"]["status"] == "FINISHED"
    for x in ("3", "4"):
        _assert_pruned(store, by_x[x], steps=10)
    # resume: nothing to rerun (finished and pruned trials are done)
    again, doc2 = sweep("resume", doc["sweep_id"])
    assert again.returncode == 0, again.stderr
    assert doc2["launched"] == 0
    assert len(_trials(store, doc["sweep_id"])) == 4


def test_hyperband_pruning_stops_the_worse_trials_at_its_first_rung(project, sweep, store):
    # Hyperband with --prune-warmup 3 (min_resource) over 8-step trials: max_resource is learnt from
    # the first finished trial (8), so there is one bracket whose first rung is step 3, and which
    # bracket a trial hashes to cannot matter. One at a time, in grid order: x=0.5 finishes (it sets
    # max_resource); 0.32 then 0.31 are each the best at the rung so far and go on; x=3 and x=4 are
    # worse than a third of the trials at step 3, so both are stopped there.
    result, doc = sweep(str(project), "-P", "x=0.5,0.32,0.31,3,4", "-P", "steps=8", "-P", "sleep=0.2",
                        "--parallel", "1", "--metric", "loss", "--prune", "hyperband", "--prune-warmup", "3",
                        "--gpus-per-trial", "0")  # fmt: skip
    assert result.returncode == 0, result.stderr
    by_x = {t["params"]["x"]: t for t in doc["trials"]}
    assert [by_x[x]["status"] for x in ("0.5", "0.32", "0.31")] == ["FINISHED"] * 3
    for x in ("3", "4"):
        assert _assert_pruned(store, by_x[x], steps=8).data.tags["mlkit.sweep.pruned_at"] == "3"


def test_sigkill_driver_then_resume_runs_exactly_the_missing_trials(project, seen, start_sweep, sweep, store):
    driver = start_sweep(str(project), "-P", "x=0,0.1,0.2,0.3,0.4,0.5", "-P", "sleep=0.8", "-P", "steps=2",
                         "--parallel", "2", "--gpus-per-trial", "1")  # fmt: skip
    sweep_id = wait_for(lambda: sweep_id_of(store), what="the sweep's parent run")
    wait_for(
        lambda: sum(r.info.status == "FINISHED" for r in _trials(store, sweep_id)) >= 1,
        what="a finished trial",
    )
    wait_for(
        lambda: sum(r.info.status == "RUNNING" for r in _trials(store, sweep_id)) >= 1, what="a running trial"
    )
    driver.send_signal(signal.SIGKILL)
    driver.communicate()
    before = {r.info.run_id: r.info.status for r in _trials(store, sweep_id)}
    assert 2 <= len(before) < 6
    # a trial the driver created but had not started when it died (SCHEDULED) is started by resume
    unstarted = sum(status == "SCHEDULED" for status in before.values())
    result, doc = sweep("resume", sweep_id)
    assert result.returncode == 0, result.stderr
    runs = _trials(store, sweep_id)
    slots = [r.data.tags["mlkit.sweep.slot"] for r in runs]
    assert sorted(slots) == [str(i) for i in range(6)]  # one run per trial: none duplicated
    assert all(r.info.status == "FINISHED" for r in runs)
    assert 6 - len(before) <= doc["launched"] <= 6 - len(before) + unstarted  # the missing ones, no more
    assert {r["run_id"] for r in seen()} == {r.info.run_id for r in runs}  # each ran once
    assert store.get_run(sweep_id).info.status == "FINISHED"


def test_resume_reruns_a_failed_trial_not_a_finished_one(project, sweep, store):
    (project / "fail-b").write_text("")
    result, doc = sweep(str(project), "-P", "tag=a,b,c", "--parallel", "3", "--gpus-per-trial", "0")
    assert result.returncode == 1
    assert sorted(t["status"] for t in doc["trials"]) == ["FAILED", "FINISHED", "FINISHED"]
    assert store.get_run(doc["sweep_id"]).data.tags["mlkit.failure_reason"] == "trials_failed"
    (project / "fail-b").unlink()
    again, doc2 = sweep("resume", doc["sweep_id"])
    assert again.returncode == 0, again.stderr
    assert doc2["launched"] == 1
    assert [t["status"] for t in doc2["trials"]] == ["FINISHED"] * 3
    b = next(t for t in doc2["trials"] if t["params"]["tag"] == "b")
    assert b["attempts"] == 2  # the failed run stays; a new run of the same trial key finished
    keys = [r.data.tags["mlkit.sweep.trial_key"] for r in _trials(store, doc["sweep_id"])]
    assert len(keys) == 4 and len(set(keys)) == 3


def test_ctrl_c_stops_the_running_trials(project, start_sweep, store):
    driver = start_sweep(str(project), "-P", "x=0,1,2", "-P", "steps=1", "-P", "sleep=60", "--parallel", "2",
                         "--gpus-per-trial", "1")  # fmt: skip
    sweep_id = wait_for(lambda: sweep_id_of(store), what="the sweep's parent run")
    wait_for(
        lambda: sum(r.info.status == "RUNNING" for r in _trials(store, sweep_id)) == 2,
        what="two running trials",
    )
    wait_for(lambda: all(store.get_metric_history(r.info.run_id, "loss") for r in _trials(store, sweep_id)),
              what="both trials logging")  # fmt: skip
    driver.send_signal(signal.SIGINT)
    out, err = driver.communicate(timeout=60)
    assert driver.returncode == 130, err
    runs = _trials(store, sweep_id)
    assert len(runs) == 2 and all(r.info.status == "KILLED" for r in runs), [r.info.status for r in runs]
    parent = store.get_run(sweep_id)
    assert parent.info.status == "KILLED" and parent.data.tags["mlkit.failure_reason"] == "signal"
    from mlkit.gpu.ledger import leased_run_ids

    assert not set(leased_run_ids()) & {r.info.run_id for r in runs}  # their GPUs were released


def test_timeout_bounds_the_whole_sweep(project, sweep, store):
    result, doc = sweep(str(project), "-P", "x=0,1", "-P", "steps=1", "-P", "sleep=60", "--parallel", "2",
                        "--gpus-per-trial", "0", "--timeout", "3s")  # fmt: skip
    assert result.returncode == 124, result.stderr
    assert doc["failure_reason"] == "timeout"
    assert all(t["status"] == "KILLED" for t in doc["trials"])
    assert store.get_run(doc["sweep_id"]).info.status == "KILLED"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (["-P", "x=a,b"], "'a' is not a float"),
        (["-P", "steps=uniform(1,3)", "--trials", "2", "--metric", "loss"], "uniform() draws floats"),
        (["-P", "x=loguniform(0,1)", "--trials", "2", "--metric", "loss"], "above 0"),
        (["-P", "x=uniform(0,1)", "--trials", "2"], "needs --metric"),
        (["-P", "x=uniform(0,1)", "--metric", "loss"], "needs --trials N"),
        (["-P", "steps=range(3,1)"], "range() is empty"),
        (["-P", "x=1,2", "--prune", "mean", "--metric", "loss"], "unknown pruner"),
        (["-P", "x=1,2", "-e", "nope"], "no entry point 'nope'"),
    ],
)
def test_bad_input_exits_2_and_creates_nothing(project, tmp_path, store_root, params, message):
    result = run_mlkit("sweep", str(project), *params, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not store_root.exists()


def test_show_json_and_csv(project, sweep, tmp_path, store):
    result, doc = sweep(str(project), "-P", "x=0,0.3", "--metric", "loss", "--gpus-per-trial", "0", "--parallel", "2",
                        "--run-name", "lr-search", "--experiment-name", "xsearch")  # fmt: skip
    assert result.returncode == 0, result.stderr
    exp = store.get_experiment_by_name("xsearch").experiment_id  # the parent and every trial in it
    assert store.get_run(doc["sweep_id"]).info.experiment_id == exp
    assert {store.get_run(t["run_id"]).info.experiment_id for t in doc["trials"]} == {exp}
    shown = run_mlkit("sweep", "show", "lr-search", "--json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    table = json.loads(shown.stdout)
    assert [t["params"]["x"] for t in table["trials"]] == ["0.3", "0"]  # best first
    assert set(table["trials"][0]) >= {"run_id", "status", "params", "metric", "duration_s", "trial_key"}
    csv = run_mlkit("sweep", "show", doc["sweep_id"][:8], "--csv", cwd=tmp_path)
    lines = csv.stdout.splitlines()
    assert lines[0] == "trial,status,loss,x,duration,run_id" and len(lines) == 3
    missing = run_mlkit("sweep", "show", "nosuchsweep", cwd=tmp_path)
    assert missing.returncode == 66
    # the same sweep name in another experiment: the bare name is ambiguous, --experiment-name picks
    other, other_doc = sweep(str(project), "-P", "x=0.1", "--metric", "loss", "--gpus-per-trial", "0",
                             "--run-name", "lr-search", "--experiment-name", "ysearch")  # fmt: skip
    assert other.returncode == 0, other.stderr
    assert run_mlkit("sweep", "show", "lr-search", cwd=tmp_path).returncode == 2
    for experiment, sweep_id in (("xsearch", doc["sweep_id"]), ("ysearch", other_doc["sweep_id"])):
        picked = run_mlkit(
            "sweep", "show", "lr-search", "--json", "--experiment-name", experiment, cwd=tmp_path
        )
        assert picked.returncode == 0, picked.stderr
        assert json.loads(picked.stdout)["sweep_id"] == sweep_id
    unknown = run_mlkit("sweep", "show", "lr-search", "--experiment-name", "nope", cwd=tmp_path)
    assert unknown.returncode == 66 and "no such experiment" in unknown.stderr
    cancel = run_mlkit("sweep", "cancel", "lr-search", "--experiment-name", "ysearch", "--json", cwd=tmp_path)
    assert cancel.returncode == 0 and json.loads(cancel.stdout)["sweep_id"] == other_doc["sweep_id"]


def test_sweep_help_loads_no_optuna():
    code = "import sys; sys.argv = ['mlkit', 'sweep', '--help']\nfrom mlkit.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass\nprint('optuna' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([os.sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False False"


def test_report_plots_the_sweep_and_runs_list_folds_its_trials(project, sweep, tmp_path, store):
    result, doc = sweep(str(project), "-P", "x=0,0.3,1", "--metric", "loss", "--gpus-per-trial", "0",
                        "--parallel", "3", "--run-name", "xsweep")  # fmt: skip
    assert result.returncode == 0, result.stderr
    page_path = tmp_path / "report.html"
    rep = run_mlkit("report", "-e", "Default", "-o", str(page_path), cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    page = page_path.read_text()
    assert '<h2 id="sweeps">' in page and "Sweep xsweep" in page
    assert page.count('<svg class="sweep-plot"') == 1  # one swept param: x
    assert page.count("<circle ") >= 3 and "x=0.3: loss=0.5<" in page  # one point per trial
    from helpers import run_on_a_terminal

    code, screen = run_on_a_terminal([os.sys.executable, "-m", "mlkit", "runs", "list"],
                                     env={**os.environ, "COLUMNS": "200"})  # fmt: skip
    assert code == 0
    lines = [line for line in screen.decode().splitlines() if "xsweep" in line or "\u2514" in line]
    names = [line for line in lines if "xsweep" in line]
    first = next(i for i, line in enumerate(lines) if "xsweep" in line and "\u2514" not in line)
    assert all("\u2514" in line for line in lines[first + 1 : first + 4]), screen.decode()
    assert len(names) == 4


def test_a_second_driver_joins_a_running_sweep_and_no_trial_runs_twice(project, start_sweep, sweep, store):
    first = start_sweep(str(project), "-P", "x=0,0.1,0.2,0.3,0.4,0.5", "-P", "sleep=1", "-P", "steps=1",
                        "--parallel", "1", "--gpus-per-trial", "0")  # fmt: skip
    sweep_id = wait_for(lambda: sweep_id_of(store), what="the sweep's parent run")
    wait_for(
        lambda: any(r.info.status == "RUNNING" for r in _trials(store, sweep_id)), what="a running trial"
    )
    refused = run_mlkit("sweep", "resume", sweep_id)
    assert refused.returncode == 2 and "--join" in refused.stderr
    second, doc2 = sweep("resume", sweep_id, "--join", "--parallel", "1")
    out, err = first.communicate(timeout=120)
    assert second.returncode == 0 and first.returncode == 0, (second.stderr, err)
    assert "still running; watching it" not in second.stderr  # the first driver's trials stay its own
    doc1 = json.loads(out)
    runs = _trials(store, sweep_id)
    assert sorted(r.data.tags["mlkit.sweep.slot"] for r in runs) == [str(i) for i in range(6)]
    assert doc1["launched"] + doc2["launched"] == 6 and doc2["launched"] >= 1
    assert all(r.info.status == "FINISHED" for r in runs)
    assert store.get_run(sweep_id).info.status == "FINISHED"


def test_cancel_stops_a_running_driver_or_the_trials_of_a_dead_one(project, start_sweep, store, tmp_path):
    args = (
        str(project),
        "-P",
        "x=0,1,2",
        "-P",
        "steps=1",
        "-P",
        "sleep=60",
        "--parallel",
        "2",
        "--gpus-per-trial",
        "0",
    )
    driver = start_sweep(*args)
    sweep_id = wait_for(lambda: sweep_id_of(store), what="the sweep's parent run")
    wait_for(
        lambda: sum(r.info.status == "RUNNING" for r in _trials(store, sweep_id)) == 2, what="two trials"
    )
    cancelled = run_mlkit("sweep", "cancel", sweep_id, "--json", cwd=tmp_path)
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["driver_pid"] == driver.pid
    driver.communicate(timeout=60)
    assert driver.returncode == 143  # SIGTERM, as on Ctrl-C
    assert [r.info.status for r in _trials(store, sweep_id)] == ["KILLED", "KILLED"]

    # a driver killed outright leaves its trials running: cancel stops them itself
    again = start_sweep(*args, "--run-name", "orphans")
    orphan_id = wait_for(lambda: _named(store, "orphans"), what="the second sweep")
    wait_for(
        lambda: sum(r.info.status == "RUNNING" for r in _trials(store, orphan_id)) == 2, what="two trials"
    )
    again.send_signal(signal.SIGKILL)
    again.communicate()
    cancelled = run_mlkit("sweep", "cancel", "orphans", "--json", cwd=tmp_path)
    assert cancelled.returncode == 0, cancelled.stderr
    doc = json.loads(cancelled.stdout)
    assert doc["driver_pid"] is None and len(doc["trials"]) == 2
    wait_for(
        lambda: all(r.info.status == "KILLED" for r in _trials(store, orphan_id)), what="the trials to stop"
    )
    parent = store.get_run(orphan_id)
    assert parent.info.status == "KILLED" and parent.data.tags["mlkit.failure_reason"] == "cancelled"


def _named(store, name: str) -> str | None:
    runs, _ = store.search_runs(None, f"attributes.run_name = '{name}'")
    return runs[0].info.run_id if runs else None


def test_a_module_planted_in_the_working_directory_is_never_imported_by_a_trial(project, seen, tmp_path):
    """Each trial's `mlkit run` was started with `python -c ...` in the sweep's working directory,
    which `-c` puts first on sys.path: whoever can write there (/tmp, a shared directory) planted
    `mlkit/` and ran their code as the user sweeping."""
    where, marker = plant_mlkit(tmp_path)
    # the driver started as the `mlkit` console script starts it: its own sys.path has no working directory
    argv = mlkit_argv(
        sys.executable,
        "sweep",
        str(project),
        "-P",
        "x=0,0.3",
        "--metric",
        "loss",
        "--env-manager",
        "local",
        "--json",
    )
    result = subprocess.run(argv, cwd=where, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert [t["status"] for t in json.loads(result.stdout)["trials"]] == ["FINISHED"] * 2
    assert len(seen()) == 2 and not marker.exists()
