"""Environment benchmarks: mlkit's env managers against MLflow's on the same spec, offline.

    python benchmarks/bench_env.py [--repeat 3]

Measures (medians; everything in a temp dir, no network: local wheels and a local conda channel):
  1. reuse of a cached env (prepare_env on an env that exists) and the `auto` in-place check,
  2. a cold uv build of a small env from local wheels,
  3. a conda env from a local channel: rattler solve + install, and install from a lockfile.
Each against MLflow's `virtualenv` (pyenv + venv + pip), and MLflow's `uv` manager where it runs;
MLflow's conda manager needs a conda binary: when there is none, the row says so.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _kit():
    spec = importlib.util.spec_from_file_location("env_test_kit", REPO / "tests" / "env" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timed(fn, repeat: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times


def fmt(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="builds per measurement (default 3)")
    args = parser.parse_args()
    kit = _kit()
    logging.disable(logging.WARNING)  # MLflow logs every "already exists" at INFO
    root = Path(tempfile.mkdtemp(prefix="mlkit-bench-env-"))
    py = ".".join(map(str, sys.version_info[:3]))
    os.environ.update(
        MLKIT_CACHE_DIR=str(root / "cache"),
        MLKIT_ENV_DIR=str(root / "envs"),
        MLKIT_OFFLINE="1",
        MLFLOW_ENV_ROOT=str(root / "mlflow-envs"),
    )
    house = root / "wheels"
    kit.make_wheel(house, "tinypkg", "1.2", {"tinypkg/__init__.py": "VALUE = 42\n"})
    kit.make_wheel(house, "otherpkg", "0.3", {"otherpkg/__init__.py": "X = 1\n"}, requires=["tinypkg>=1"])
    os.environ["MLKIT_FIND_LINKS"] = str(house)
    for var in ("PIP_FIND_LINKS", "UV_FIND_LINKS"):
        os.environ.pop(var, None)
    deps = ["tinypkg>=1", "otherpkg"]
    project = root / "proj"
    kit.write(project / "python_env.yaml", f'python: "{py}"\nbuild_dependencies: []\ndependencies: {deps}\n')

    from mlkit.env import EnvRef, prepare_env
    from mlkit.env.check import check_current
    from mlkit.env.spec import load_spec

    ref = EnvRef("python", project / "python_env.yaml")
    rows: list[tuple[str, str, str, str]] = []

    # ---------------------------------------------------------------- cold uv build
    def mlkit_cold():
        shutil.rmtree(root / "envs", ignore_errors=True)
        prepare_env(project, ref, "uv")

    mlkit_uv, _ = timed(mlkit_cold, args.repeat)
    kit.write(
        project / "python_env.yaml", f'python: "{py}"\nbuild_dependencies: [pip]\ndependencies: {deps}\n'
    )
    mlkit_uv_pip, _ = timed(mlkit_cold, args.repeat)
    kit.write(project / "python_env.yaml", f'python: "{py}"\nbuild_dependencies: []\ndependencies: {deps}\n')

    mlflow_env = {
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(house),
        "UV_OFFLINE": "1",
        "UV_FIND_LINKS": str(house),
    }
    mlflow_venv = mlflow_uv = None
    mlflow_venv_note = mlflow_uv_note = ""
    try:
        from mlflow.utils import virtualenv as mv
        from mlflow.utils.environment import _PythonEnv

        python_env = _PythonEnv(python=py, build_dependencies=["pip"], dependencies=deps)
        # MLflow's uv manager installs build_dependencies with `uv pip install`: offline, `pip`
        # is in no wheelhouse and fails ("pip was not found in the cache"); give it none
        python_env_uv = _PythonEnv(python=py, build_dependencies=[], dependencies=deps)

        def mlflow_build(manager: str):
            env_dir = root / "mlflow-envs" / f"bench-{manager}"
            shutil.rmtree(env_dir, ignore_errors=True)
            old = dict(os.environ)
            os.environ.update(mlflow_env)
            try:
                mv._create_virtualenv(
                    project,
                    python_env if manager == "virtualenv" else python_env_uv,
                    env_dir,
                    env_manager=manager,
                    extra_env=mlflow_env,
                    capture_output=True,
                )
            finally:
                os.environ.clear()
                os.environ.update(old)

        try:
            mlflow_venv, _ = timed(lambda: mlflow_build("virtualenv"), args.repeat)
        except Exception as exc:  # pyenv missing, no network...
            mlflow_venv_note = f"cannot run here: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
        try:
            mlflow_uv, _ = timed(lambda: mlflow_build("uv"), args.repeat)
        except Exception as exc:
            mlflow_uv_note = f"cannot run here: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    except ImportError as exc:
        mlflow_venv_note = mlflow_uv_note = f"MLflow not installed ({exc.name})"

    rows.append(
        (
            "cold build, 2 local wheels (python_env.yaml)",
            fmt(mlkit_uv) + " (mlkit uv)",
            fmt(mlflow_venv) + " (virtualenv)" if mlflow_venv else mlflow_venv_note,
            fmt(mlflow_uv) + " (MLflow uv)" if mlflow_uv else mlflow_uv_note,
        )
    )

    rows.append(
        (
            "cold build, same + build_dependencies [pip]",
            fmt(mlkit_uv_pip) + " (mlkit uv, the interpreter's bundled pip wheel)",
            "(the virtualenv row above has it)",
            "fails offline: `uv pip install pip` finds no pip",
        )
    )

    # ---------------------------------------------------------------- reuse
    prepare_env(project, ref, "uv")
    reuse, _ = timed(lambda: prepare_env(project, ref, "uv"), 20)
    code = (
        "import sys; from pathlib import Path; from mlkit.env import EnvRef, prepare_env; "
        f"p = prepare_env(Path({str(project)!r}), EnvRef('python', Path({str(ref.path)!r})), 'uv'); "
        "assert p.reused"
    )
    e2e, _ = timed(lambda: subprocess.run([sys.executable, "-c", code], check=True), args.repeat)
    mlflow_reuse = None
    if mlflow_venv is not None:
        env_dir = root / "mlflow-envs" / "bench-virtualenv"
        mlflow_reuse, _ = timed(
            lambda: mv._create_virtualenv(project, python_env, env_dir, env_manager="virtualenv"), 20
        )
    rows.append(
        (
            "reuse a cached env (in process)",
            fmt(reuse) + " (marker check, no lock)",
            (fmt(mlflow_reuse) + " (dir exists, no validation)") if mlflow_reuse else mlflow_venv_note,
            "",
        )
    )
    rows.append(("reuse, whole `python -c prepare_env` process", fmt(e2e), "", ""))

    sat = root / "sat"
    yaml_mm = ".".join(__import__("yaml").__version__.split(".")[:2])
    kit.write(
        sat / "conda.yaml",
        f"dependencies:\n  - python={py}\n  - pyyaml>={yaml_mm}\n  - pip:\n    - packaging\n",
    )
    spec = load_spec(sat, EnvRef("conda", sat / "conda.yaml"))
    check, _ = timed(lambda: check_current(spec), 50)
    in_place, _ = timed(lambda: prepare_env(sat, EnvRef("conda", sat / "conda.yaml")), 20)
    rows.append(
        (
            "`auto` check, current env satisfies (3 pkgs)",
            f"{fmt(check)} check, {fmt(in_place)} prepare_env",
            "no such mode (always builds)",
            "",
        )
    )

    # ---------------------------------------------------------------- conda
    channel = root / "channel"
    kit.make_conda_pkg(channel, "hello", "1.0", ["world >=1"])
    kit.make_conda_pkg(channel, "world", "1.2")
    kit.index_channel(channel)
    cproj = root / "cproj"
    kit.write(cproj / "conda.yaml", f"channels: [{channel.as_uri()}]\ndependencies: [hello]\n")
    cref = EnvRef("conda", cproj / "conda.yaml")

    def conda_cold():
        shutil.rmtree(root / "envs", ignore_errors=True)
        prepare_env(cproj, cref, "conda")

    solve_install, _ = timed(conda_cold, args.repeat)
    from mlkit.env.solve import make_lockfile

    lock_time, _ = timed(lambda: make_lockfile(cproj, cref), 1)
    from_lock, _ = timed(conda_cold, args.repeat)
    conda_bin = shutil.which("conda") or shutil.which("mamba") or shutil.which("micromamba")
    mlflow_conda = (
        "not measured"
        if conda_bin
        else "cannot run here: MLflow's conda manager runs `conda env create`; no conda binary"
    )
    rows.append(
        ("conda env, local channel: solve + install", fmt(solve_install) + " (rattler)", mlflow_conda, "")
    )
    rows.append(
        (
            "conda env from conda-lock.yml (no solve)",
            fmt(from_lock) + f" (lock took {fmt(lock_time)})",
            mlflow_conda,
            "",
        )
    )

    print(
        f"\nmlkit env benchmarks — Python {py}, {os.cpu_count()} CPUs, median of {args.repeat} (20 for reuse)\n"
    )
    print("| measurement | mlkit | MLflow virtualenv | MLflow uv |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
