"""Every exit code of `mlkit run` (docs/exit-codes.md), driven through a real `python -m mlkit`."""

from __future__ import annotations

import signal

import pytest

from mlkit.errors import ExitCode

PROJECT = {
    "MLproject": """
        entry_points:
          main:
            parameters: {code: {type: int, default: 0}}
            command: "python exit.py {code}"
          missing:
            command: "definitely-not-a-program-mlkit-test --flag"
    """,
    "exit.py": "import sys; print('running'); sys.exit(int(sys.argv[1]))",
    "sleep.py": "import time; print('ready', flush=True); time.sleep(60)",
}


def _one_line_error(stderr: str) -> None:
    assert "Error: " in stderr
    assert "hint: " in stderr
    assert "Traceback" not in stderr


def test_ok_0_and_the_entry_points_own_code(make_project, mlkit_run, only_run):
    project = make_project(PROJECT)
    assert mlkit_run(str(project)).returncode == ExitCode.OK
    result = mlkit_run(str(project), "-P", "code=42")
    assert result.returncode == 42
    assert "Error:" not in result.stderr  # the entry point's failure is not mlkit's


def test_failure_1_when_the_command_cannot_start(make_project, mlkit_run, only_run):
    project = make_project(PROJECT)
    result = mlkit_run(str(project), "-e", "missing")
    assert result.returncode == ExitCode.FAILURE
    _one_line_error(result.stderr)
    assert "definitely-not-a-program-mlkit-test" in result.stderr
    run = only_run()
    assert run.info.status == "FAILED"
    assert run.data.tags["mlkit.failure_reason"] == "launch_failed"


@pytest.mark.parametrize(
    "args",
    [
        ["-P", "oops"],  # no '='
        ["-P", "code=1", "-P", "code=2"],  # given twice
        ["-P", "code=notanint"],  # bad value for an int parameter
        ["-e", "nope"],  # no such entry point
        ["--env-manager", "pixi"],
        ["--timeout", "soon"],
        ["--experiment-name", "a", "--experiment-id", "0"],
        ["--nnodes", "2"],  # no --rdzv-endpoint
    ],
)
def test_usage_2_and_nothing_is_created(make_project, mlkit_run, store_root, args):
    project = make_project(PROJECT)
    result = mlkit_run(str(project), *args)
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert "Traceback" not in result.stderr
    assert not store_root.exists()


def test_usage_2_with_traceback_on_request(make_project, mlkit_run):
    project = make_project(PROJECT)
    result = mlkit_run(str(project), "-e", "nope", env={"MLKIT_TRACEBACK": "1"})
    assert result.returncode == ExitCode.USAGE
    assert "Traceback" in result.stderr


def test_not_found_66(make_project, mlkit_run):
    project = make_project(PROJECT)
    result = mlkit_run(str(project), "--experiment-id", "424242")
    assert result.returncode == ExitCode.NOT_FOUND
    _one_line_error(result.stderr)


def test_not_found_66_leaves_no_store_behind(make_project, mlkit_run, store_root):
    """A wrong experiment id (flag or MLFLOW_EXPERIMENT_ID) is found out before the store would be
    created: no `mlruns/` with only Default in it is left behind."""
    project = make_project(PROJECT)
    for args, env in ((["--experiment-id", "424242"], {}), ([], {"MLFLOW_EXPERIMENT_ID": "424242"})):
        result = mlkit_run(str(project), *args, env=env)
        assert result.returncode == ExitCode.NOT_FOUND, result.stderr
        _one_line_error(result.stderr)
        assert "experiment '424242' does not exist" in result.stderr
        assert not store_root.exists()


def test_gpu_unavailable_69(make_project, mlkit_run, only_run):
    project = make_project(PROJECT)
    result = mlkit_run(
        str(project), "--env-manager", "local", "--gpus", "5", "--system-metrics-interval", "0",
        fast=False, env={"MLKIT_FAKE_NVML": "four_idle"},
    )  # fmt: skip
    assert result.returncode == ExitCode.GPU_UNAVAILABLE
    _one_line_error(result.stderr)
    run = only_run()
    assert (run.info.status, run.data.tags["mlkit.failure_reason"]) == ("FAILED", "gpu_unavailable")


def test_more_ranks_than_gpus_asked_for_is_a_usage_error(make_project, mlkit_run, only_run):
    """Rank 1 would look for cuda:1 and crash mid-launch; say so before anything starts."""
    project = make_project(PROJECT)
    result = mlkit_run(
        str(project), "--env-manager", "local", "--gpus", "1", "--nproc-per-node", "2",
        fast=False, env={"MLKIT_FAKE_NVML": "four_idle"},
    )  # fmt: skip
    assert result.returncode == ExitCode.USAGE
    _one_line_error(result.stderr)
    assert "--nproc-per-node 2 with --gpus 1: each rank needs a GPU of its own" in result.stderr
    assert "hint: ask for --gpus 2, or --gpus none" in result.stderr


def test_gpu_wait_timeout_76(make_project, mlkit_run, only_run):
    project = make_project(PROJECT)
    result = mlkit_run(
        str(project), "--env-manager", "local", "--gpus", "2", "--exclude-busy", "--wait", "1s",
        "--system-metrics-interval", "0",
        fast=False, env={"MLKIT_FAKE_NVML": "one_busy_foreign", "MLKIT_GPU_POLL_INTERVAL": "0.2"},
    )  # fmt: skip
    assert result.returncode == ExitCode.GPU_WAIT_TIMEOUT
    _one_line_error(result.stderr)
    run = only_run()
    assert (run.info.status, run.data.tags["mlkit.failure_reason"]) == ("FAILED", "gpu_wait_timeout")


def test_env_failed_73(make_project, mlkit_run, only_run):
    project = make_project(
        {
            "python_env.yaml": """
                python: "3"
                dependencies:
                  - definitely-not-a-real-package-mlkit==9.9.9
            """,
            "t.py": "print('never runs')",
        }
    )
    result = mlkit_run(
        str(project), "-e", "t.py", "--env-manager", "uv", "--gpus", "none", "--system-metrics-interval", "0",
        fast=False, env={"MLKIT_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == ExitCode.ENV_FAILED, result.stderr
    _one_line_error(result.stderr)
    assert "never runs" not in result.stdout
    run = only_run()
    assert (run.info.status, run.data.tags["mlkit.failure_reason"]) == ("FAILED", "env_build_failed")


def test_locked_75(make_project, mlkit_run, start_mlkit, wait_for, store_root):
    project = make_project(PROJECT)
    holder = start_mlkit(str(project), "-e", "sleep.py", "--lock", "nightly")
    wait_for(lambda: b"ready" in holder.out_path.read_bytes(), what="the lock holder to run")
    result = mlkit_run(str(project), "--lock", "nightly")
    assert result.returncode == ExitCode.LOCKED
    _one_line_error(result.stderr)
    holder.send_signal(signal.SIGTERM)
    holder.wait(timeout=30)
    assert mlkit_run(str(project), "--lock", "nightly").returncode == 0  # released with its holder


def test_timeout_124(make_project, mlkit_run):
    project = make_project(PROJECT)
    result = mlkit_run(str(project), "-e", "sleep.py", "--timeout", "1", env={"MLKIT_KILL_GRACE": "1"})
    assert result.returncode == ExitCode.TIMEOUT


def test_interrupted_130(make_project, start_mlkit, wait_for):
    project = make_project(PROJECT)
    sup = start_mlkit(str(project), "-e", "sleep.py")
    wait_for(lambda: b"ready" in sup.out_path.read_bytes(), what="the entry point to run")
    sup.send_signal(signal.SIGINT)
    assert sup.wait(timeout=30) == ExitCode.INTERRUPTED


def test_interrupted_while_waiting_for_the_lock_creates_no_run(
    make_project, start_mlkit, wait_for, store_root
):
    project = make_project(PROJECT)
    holder = start_mlkit(str(project), "-e", "sleep.py", "--lock", "l1")
    wait_for(lambda: b"ready" in holder.out_path.read_bytes(), what="the lock holder to run")
    waiter = start_mlkit(str(project), "--lock", "l1", "--lock-wait", "1m")
    wait_for(lambda: b"l1" in waiter.err_path.read_bytes(), what="the waiter to report that it waits")
    assert waiter.poll() is None
    waiter.send_signal(signal.SIGTERM)
    assert waiter.wait(timeout=30) == 128 + signal.SIGTERM
    from mlkit.tracking.store import FileStore

    runs, _ = FileStore(store_root).search_runs(["0"])
    assert len(runs) == 1  # only the holder's
    holder.send_signal(signal.SIGTERM)
    holder.wait(timeout=30)


NAP = {
    "MLproject": "name: nap\nentry_points:\n  main:\n    command: python nap.py\n",
    "nap.py": "import os, time\nprint('ready', flush=True)\nwhile not os.path.exists('go'):\n    time.sleep(0.05)\n",
}


@pytest.mark.parametrize("what", ["run", "experiment"])
def test_a_run_deleted_while_it_runs_still_records_its_end(
    make_project, start_mlkit, wait_for, store_root, what
):
    """`runs delete` (or `experiments delete`) of a live run is a soft delete, as MLflow's: the
    supervisor still records how it ended, so the run is never left RUNNING with no one behind
    it, and a restore shows the real outcome, not FAILED/lost."""
    from mlkit.tracking.store import FileStore

    project = make_project(NAP)
    sup = start_mlkit(str(project), "--experiment-name", "naps")
    wait_for(lambda: b"ready" in sup.out_path.read_bytes(), what="the entry point to run")
    store = FileStore(store_root)
    exp_id = store.get_experiment_by_name("naps").experiment_id
    (run,), _ = store.search_runs([exp_id])
    if what == "run":
        store.delete_run(run.info.run_id)
    else:
        store.delete_experiment(exp_id)
    (project / "go").touch()
    assert sup.wait(timeout=60) == 0, sup.err_path.read_text()
    assert "could not record" not in sup.err_path.read_text()
    ended = FileStore(store_root).get_run(run.info.run_id).info
    assert (ended.status, ended.lifecycle_stage) == ("FINISHED", "deleted") and ended.end_time
    if what == "run":
        store.restore_run(run.info.run_id)
    else:
        store.restore_experiment(exp_id)
    assert FileStore(store_root).mark_lost_runs(whole=True) == []
    assert FileStore(store_root).get_run(run.info.run_id).info.status == "FINISHED"


@pytest.mark.parametrize("value", ["inf", "99999999999999999999d"])
def test_a_timeout_of_forever_is_no_deadline(make_project, mlkit_run, value):
    """The duration hint offers 'inf'; as --timeout it used to crash the timer thread (a traceback
    on stderr, no deadline kept). Now it is no deadline, and --dry-run says so."""
    import json

    project = make_project(PROJECT)
    result = mlkit_run(str(project), "--timeout", value)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    dry = mlkit_run(str(project), "--timeout", value, "--dry-run", "--json")
    assert json.loads(dry.stdout)["timeout_s"] is None


def test_processes_torchrun_cannot_start_are_usage_2_before_the_run_exists(
    make_project, mlkit_run, store_root
):
    project = make_project({"MLproject": "entry_points:\n  main:\n    command: \"python -c 'print(1)'\"\n"})
    result = mlkit_run(str(project), "--nproc-per-node", "2")
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert "cannot hand the command to torchrun" in result.stderr
    _one_line_error(result.stderr)
    assert not store_root.exists()
