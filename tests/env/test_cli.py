"""`mlkit env create / list / prune` as a user runs them (real subprocesses)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from mlkit import settings
from mlkit.env.cache import LAST_USED, build_lock


def _project(tmp_path: Path, kit, deps: str) -> Path:
    project = tmp_path / "proj"
    kit.write(project / "python_env.yaml", f"dependencies: [{deps}]\n")
    return project


def test_create_list_prune(tmp_path, kit, wheelhouse, mlkit_cli):
    project = _project(tmp_path, kit, "tinypkg")
    created = mlkit_cli("env", "create", str(project), "--env-manager", "uv", "--json")
    assert created.returncode == 0, created.stderr
    env = json.loads(created.stdout)
    assert env["manager"] == "uv" and env["reused"] is False and Path(env["path"]).is_dir()

    listed = mlkit_cli("env", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    envs = json.loads(listed.stdout)["envs"]
    assert [(e["hash"], e["manager"], e["path"], e["complete"]) for e in envs] == [
        (env["hash"], "uv", env["path"], True)
    ]
    assert envs[0]["size"] > 0 and envs[0]["project"] == str(project.resolve())
    human = mlkit_cli("env", "list")
    assert env["hash"] in human.stdout and "uv" in human.stdout

    # recent: kept; --dry-run removes nothing; old: removed, bytes reported
    assert "removed 0 environment(s)" in mlkit_cli("env", "prune").stderr
    old = time.time() - 40 * 86400
    os.utime(Path(env["path"]) / LAST_USED, (old, old))
    dry = mlkit_cli("env", "prune", "--older-than", "30d", "--dry-run")
    assert "would remove 1 environment(s)" in dry.stderr and Path(env["path"]).is_dir()
    pruned = mlkit_cli("env", "prune", "--older-than", "30d", "--json")
    result = json.loads(pruned.stdout)
    assert len(result["removed"]) == 1 and result["bytes_freed"] == envs[0]["size"] > 0
    assert not Path(env["path"]).exists()


def test_prune_never_touches_an_env_being_built(tmp_path, mlkit_cli):
    half = settings.env_dir() / "0123456789abcdef-uv"
    (half / "bin").mkdir(parents=True)  # no marker: a build in progress (or a dead one)
    with build_lock("0123456789abcdef-uv"):
        result = json.loads(mlkit_cli("env", "prune", "--older-than", "0", "--json").stdout)
        assert result["removed"] == [] and len(result["skipped_locked"]) == 1 and half.is_dir()
    result = json.loads(mlkit_cli("env", "prune", "--older-than", "1h", "--json").stdout)
    assert len(result["removed"]) == 1 and not half.exists()  # the builder is gone: a dead build


def test_errors_are_one_line_with_exit_codes(tmp_path, kit, wheelhouse, mlkit_cli):
    project = _project(tmp_path, kit, "tinypkg>=9")
    failed = mlkit_cli("env", "create", str(project), "--env-manager", "uv")
    assert failed.returncode == 73
    assert "Error: python_env.yaml: the requirements cannot be satisfied" in failed.stderr
    assert "hint:" in failed.stderr and ".log" in failed.stderr
    bad = mlkit_cli("env", "create", str(project), "--env-manager", "pyenv")
    assert bad.returncode == 2 and "unknown environment manager" in bad.stderr
    age = mlkit_cli("env", "prune", "--older-than", "soon")
    assert age.returncode == 2 and "--older-than 'soon': not an age" in age.stderr
    kit.write(project / "python_env.yaml", "python: 3.11\n")
    spec = mlkit_cli("env", "create", str(project))
    assert spec.returncode == 2 and "python_env.yaml: python: must be a string" in spec.stderr


def test_prune_never_deletes_the_env_of_a_run_still_running(tmp_path, kit, wheelhouse, mlkit_cli):
    """A 3-day training run reuses its env at its start (last used: then); a cron `mlkit env prune
    --older-than 1d` the next day must not delete it under the run."""
    import subprocess
    import sys

    from helpers import REPO

    project = _project(tmp_path, kit, "tinypkg")
    ready, release = tmp_path / "ready", tmp_path / "release"
    wait = (
        f"import os, time, tinypkg; open({str(ready)!r}, 'w').close()\n"
        f"while not os.path.exists({str(release)!r}): time.sleep(0.05)\n"
        "import tinypkg.late"
    )
    kit.write(project / "wait.py", wait)
    kit.write(
        project / "MLproject",
        "name: p\npython_env: python_env.yaml\nentry_points:\n  main:\n    command: python wait.py\n",
    )
    run = subprocess.Popen(
        [sys.executable, "-m", "mlkit", "run", str(project), "--env-manager", "uv", "--store", str(tmp_path / "mlruns")],
        env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        while not ready.exists():  # the entry point runs in the env
            assert run.poll() is None, run.stdout.read() if run.stdout else ""
            time.sleep(0.05)
        [env] = json.loads(mlkit_cli("env", "list", "--json").stdout)["envs"]
        pruned = mlkit_cli("env", "prune", "--older-than", "0")
        assert pruned.returncode == 0, pruned.stderr
        assert Path(env["path"]).is_dir() and "removed 0 environment(s)" in pruned.stderr, pruned.stderr
        assert "a run is using it" in pruned.stderr
        site = next(Path(env["path"]).glob("lib/python*/site-packages/tinypkg"))
        kit.write(site / "late.py", "")  # what the run imports after the prune: still there
    finally:
        release.touch()
        out, _ = run.communicate(timeout=120)
    assert run.returncode == 0, out
    pruned = json.loads(mlkit_cli("env", "prune", "--older-than", "0", "--json").stdout)
    assert len(pruned["removed"]) == 1 and not Path(env["path"]).exists()  # the run is over
