"""The uv manager, for real and offline: a wheelhouse made in the test, a venv, a subprocess in it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlkit import settings
from mlkit.env import EnvRef, prepare_env
from mlkit.env.cache import MARKER
from mlkit.errors import EnvBuildError, EnvSpecError

PY = ".".join(map(str, sys.version_info[:2]))

SCRIPT = """\
import sys, tinypkg, mlkit, yaml
assert sys.prefix != sys.base_prefix, "not in the venv"
assert "site-packages" not in yaml.__file__, "yaml leaked in from the host"
with mlkit.start_run(run_name="in-env") as run:
    mlkit.log_metric("answer", tinypkg.VALUE)
print(run.info.run_id)
"""


def test_uv_env_built_offline_runs_entry_point_that_logs(tmp_path, kit, wheelhouse, store_root):
    project = tmp_path / "proj"
    f = kit.write(project / "python_env.yaml", f'python: "{PY}"\ndependencies:\n  - tinypkg>=1.1\n')
    lines: list[str] = []
    prepared = prepare_env(project, EnvRef("python", f), progress=lines.append)
    assert prepared.manager == "uv" and not prepared.reused
    assert "does not satisfy it" in prepared.message and "tinypkg>=1.1" in prepared.message
    assert prepared.path == settings.env_dir() / f"{prepared.hash}-uv"
    assert (prepared.path / MARKER).is_file()
    assert prepared.python == prepared.path / "bin" / "python"
    assert prepared.env_vars["VIRTUAL_ENV"] == str(prepared.path)
    assert prepared.env_vars["PATH"].startswith(str(prepared.path / "bin") + os.pathsep)
    assert prepared.tags == {
        "mlkit.env.manager": "uv",
        "mlkit.env.hash": prepared.hash,
        "mlkit.env.path": str(prepared.path),
        "mlkit.env.python_version": ".".join(map(str, sys.version_info[:3])),
        "mlkit.env.reused": "false",
        "mlkit.env.requested": "auto",
    }
    assert any("uv pip install" in line for line in lines)

    # `python` on PATH is the env's interpreter; the entry point imports mlkit and logs a metric
    kit.write(project / "train.py", SCRIPT)
    proc = subprocess.run(
        ["python", "train.py"],
        cwd=project,
        env=kit.env_for(prepared),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    run_id = proc.stdout.strip().splitlines()[-1]
    from mlkit.tracking.store import FileStore

    assert FileStore(store_root).get_run(run_id).data.metrics["answer"] == 42.0

    # reuse: no build, well under a second
    started = time.perf_counter()
    again = prepare_env(project, EnvRef("python", f))
    assert time.perf_counter() - started < 1.0
    assert again.reused and again.path == prepared.path and again.tags["mlkit.env.reused"] == "true"


def test_conda_yaml_with_only_pip_part_goes_to_uv(tmp_path, kit, wheelhouse):
    f = kit.write(
        tmp_path / "conda.yaml",
        f"channels: [conda-forge]\ndependencies:\n  - python={PY}\n  - pip\n  - pip:\n    - tinypkg==1.0\n",
    )
    prepared = prepare_env(tmp_path, EnvRef("conda", f))
    assert prepared.manager == "uv"
    out = subprocess.run(
        [str(prepared.python), "-c", "import tinypkg; print(tinypkg.VALUE)"], capture_output=True, text=True
    )
    assert out.stdout.strip() == "10"


def test_uv_manager_explicit_with_no_requirements(tmp_path, kit, wheelhouse):
    f = kit.write(tmp_path / "python_env.yaml", "dependencies: []\n")
    prepared = prepare_env(tmp_path, EnvRef("python", f), "uv")
    assert prepared.manager == "uv" and "requested" not in " ".join(prepared.tags)
    out = subprocess.run(
        [str(prepared.python), "-c", "import mlkit.tracking.fluent"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr


def test_unsatisfiable_requirement_leaves_nothing_and_names_the_log(tmp_path, kit, wheelhouse):
    f = kit.write(tmp_path / "python_env.yaml", "dependencies:\n  - tinypkg>=5\n")
    with pytest.raises(EnvBuildError) as info:
        prepare_env(tmp_path, EnvRef("python", f), "uv")
    err = info.value
    assert "cannot be satisfied" in err.message and "tinypkg" in err.message
    assert "\n" not in err.message
    log = settings.env_dir() / "logs" / f"{info.value.hint.split('/logs/')[1]}"
    assert str(log) in err.hint and log.is_file() and "tinypkg>=5" in log.read_text()
    leftovers = [p.name for p in settings.env_dir().iterdir() if p.name not in ("logs", ".locks")]
    assert leftovers == []


def test_no_matching_python_is_one_clear_error(tmp_path, kit, wheelhouse):
    f = kit.write(tmp_path / "python_env.yaml", 'python: "3.4.1"\ndependencies: []\n')
    with pytest.raises(EnvBuildError, match=r"no Python interpreter matching 3\.4\.1 found on this system"):
        prepare_env(tmp_path, EnvRef("python", f), "uv")
    assert not any(p.name.endswith("-uv") for p in settings.env_dir().iterdir())


def test_unpinned_pip_build_dependency_works_offline(tmp_path, kit, wheelhouse):
    """MLflow's python_env.yaml always lists pip; offline it comes from the interpreter's bundle."""
    f = kit.write(tmp_path / "python_env.yaml", "build_dependencies: [pip]\ndependencies: [tinypkg]\n")
    prepared = prepare_env(tmp_path, EnvRef("python", f), "uv")
    out = subprocess.run([str(prepared.python), "-m", "pip", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and str(prepared.path) in out.stdout


def test_env_whose_python_is_gone_is_rebuilt(tmp_path, kit, wheelhouse):
    f = kit.write(tmp_path / "python_env.yaml", "dependencies: [tinypkg]\n")
    first = prepare_env(tmp_path, EnvRef("python", f), "uv")
    first.python.unlink()  # e.g. the venv's base interpreter was uninstalled
    again = prepare_env(tmp_path, EnvRef("python", f), "uv")
    assert not again.reused and again.python.exists() and again.path == first.path


@pytest.mark.parametrize("manager", ["uv", "auto"])
def test_a_lockfile_without_this_platform_is_refused_not_built_empty(tmp_path, kit, wheelhouse, manager):
    """A pip-only conda.yaml locked on a Mac: uv found no locked entry for linux-64 and built an
    environment with none of the packages, without a word (the conda manager refused it)."""
    f = kit.write(tmp_path / "conda.yaml", f"dependencies:\n  - python={PY}\n  - pip:\n    - tinypkg\n")
    wheel = next(wheelhouse.glob("tinypkg-1.0-*.whl"))
    kit.write(
        tmp_path / "conda-lock.yml",
        "version: 1\nmetadata: {platforms: [osx-arm64]}\npackage:\n"
        f"- {{name: tinypkg, version: '1.0', manager: pip, platform: osx-arm64, url: 'file://{wheel}'}}\n",
    )
    with pytest.raises(EnvSpecError, match=r"conda-lock.yml: has no packages for this platform \(linux-64\)"):
        prepare_env(tmp_path, EnvRef("conda", f), manager)
    assert not any(p.name.endswith("-uv") for p in settings.env_dir().iterdir())


def test_a_relative_env_dir_is_taken_from_where_mlkit_was_started(tmp_path, kit, wheelhouse, monkeypatch):
    """MLKIT_ENV_DIR=envs: uv ran in the project directory and found no `envs/<key>/bin/python`."""
    project = tmp_path / "proj"
    f = kit.write(project / "python_env.yaml", "dependencies: [tinypkg]\n")
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    monkeypatch.setenv("MLKIT_ENV_DIR", "rel-envs")
    prepared = prepare_env(project, EnvRef("python", f), "uv")
    assert (
        prepared.path == tmp_path / "here" / "rel-envs" / prepared.path.name and prepared.python.is_absolute()
    )
    out = subprocess.run(
        [str(prepared.python), "-c", "import tinypkg"], cwd=project, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr


def test_a_cached_env_follows_the_mlkit_that_runs_it(tmp_path, kit, wheelhouse):
    """The env links to the mlkit package that built it; once that install is gone (mlkit
    reinstalled into a new venv, the old one deleted) every run in the env failed on `import mlkit`."""
    f = kit.write(tmp_path / "python_env.yaml", "dependencies: [tinypkg]\n")
    first = prepare_env(tmp_path, EnvRef("python", f), "uv")
    link = first.path / ".mlkit-runtime" / "mlkit"
    link.unlink()
    link.symlink_to(tmp_path / "old-venv" / "site-packages" / "mlkit")  # removed since
    again = prepare_env(tmp_path, EnvRef("python", f), "uv")
    assert again.reused
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [str(again.python), "-c", "import mlkit.tracking; print(mlkit.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    import mlkit

    assert Path(out.stdout.strip()).resolve() == Path(mlkit.__file__).resolve()


def test_an_env_dir_that_cannot_go_on_path_is_refused(tmp_path, kit, wheelhouse, monkeypatch, mlkit_cli):
    """MLKIT_ENV_DIR=/data/a:b put `/data/a:b/<key>/bin` first on PATH, which is two entries: the
    command's `python` was the host's, run without a word while the tags said uv."""
    project = tmp_path / "proj"
    kit.write(project / "python_env.yaml", "dependencies: [tinypkg]\n")
    kit.write(project / "run.sh", "python -c 'import tinypkg'\n")  # `python` found on PATH
    kit.write(
        project / "MLproject",
        "name: p\npython_env: python_env.yaml\nentry_points:\n  main:\n    command: sh run.sh\n",
    )
    monkeypatch.setenv("MLKIT_ENV_DIR", str(tmp_path / "a:b"))
    result = mlkit_cli("run", str(project), "--env-manager", "uv", "--store", str(tmp_path / "mlruns"))
    assert result.returncode == 2, result.stderr
    assert (
        str(tmp_path / "a:b") in result.stderr and "':'" in result.stderr and "MLKIT_ENV_DIR" in result.stderr
    )
    assert not (tmp_path / "a:b").exists()


@pytest.mark.parametrize("dir_mode", ["colon", "world-writable"])
def test_an_env_dir_mlkit_refuses_is_refused_before_the_run_exists(
    tmp_path, kit, monkeypatch, mlkit_cli, dir_mode
):
    """Exit 2 (or 1 for an unsafe dir) and no run: before, the run was created first and left FAILED
    launch_failed, so a cron job's store filled with failed runs of a mistyped MLKIT_ENV_DIR."""
    project = tmp_path / "proj"
    kit.write(project / "python_env.yaml", "dependencies: [tinypkg]\n")
    kit.write(
        project / "MLproject",
        "name: p\npython_env: python_env.yaml\nentry_points:\n  main:\n    command: 'true'\n",
    )
    env_dir = tmp_path / ("a:b" if dir_mode == "colon" else "shared")
    if dir_mode != "colon":
        env_dir.mkdir()
        env_dir.chmod(0o1777)
    monkeypatch.setenv("MLKIT_ENV_DIR", str(env_dir))
    store = tmp_path / "mlruns"
    result = mlkit_cli("run", str(project), "--env-manager", "uv", "--store", str(store))
    assert result.returncode == (2 if dir_mode == "colon" else 1), result.stderr
    assert "MLKIT_ENV_DIR" in result.stderr and "Traceback" not in result.stderr
    assert "run " not in result.stderr  # no run was started, so none is reported
    assert not store.exists()


def test_a_module_planted_where_mlkit_runs_is_never_imported_by_a_build(
    tmp_path, kit, wheelhouse, monkeypatch
):
    """Building a venv asked the interpreter about itself with `python -c "import json, ..."` in
    mlkit's working directory, which `-c` puts first on sys.path: a `json.py` planted there (/tmp, a
    shared directory) ran as the user building. Unpinned `pip` among the build dependencies takes
    that path too."""
    project = tmp_path / "proj"
    kit.write(project / "python_env.yaml", "build_dependencies: [pip]\ndependencies: [tinypkg]\n")
    where, marker = tmp_path / "shared", tmp_path / "hijacked"
    where.mkdir()
    for name in ("json", "sysconfig", "ensurepip"):
        (where / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').close()\nraise SystemExit(9)\n")
    monkeypatch.chdir(where)
    env = prepare_env(project, EnvRef("python", project / "python_env.yaml"), "uv")
    assert (env.path / MARKER).exists() and not marker.exists()
