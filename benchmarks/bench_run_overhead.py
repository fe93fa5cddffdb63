"""What `mlkit run` costs on top of starting the entry point yourself, next to `mlflow run`.

    python benchmarks/bench_run_overhead.py            # 15 repeats
    python benchmarks/bench_run_overhead.py -n 5 --no-mlflow

Times (wall clock, median of N) a trivial entry point (`python noop.py`) started directly, through
`mlkit run --env-manager local --gpus none --system-metrics-interval 0`, and through
`mlflow run --env-manager local` (MLFLOW_ALLOW_FILE_STORE=true, a file store), plus
`mlkit --help` and `mlflow --help`. Each tool is started as a user starts it: its console script
beside this interpreter (`python -m mlkit` / `python -m mlflow` where there is none; the table
says which). Each tool gets a fresh temporary store. Targets: run overhead
< 100 ms (issue 20; it was 150 ms), `--help` < 100 ms. Prints a markdown table. Compare two
versions back to back (the machine's load moves every figure): run it with
PYTHONPATH=<a worktree of the other commit> for the "before" rows.

Where `mlkit --help` time goes: `python -X importtime -m mlkit --help 2>&1 | sort -t'|' -k2 -n`.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_MS = 100.0
MLPROJECT = """name: noop
entry_points:
  main:
    command: "python noop.py"
"""


class Timing:
    """Wall-clock and CPU seconds (user+sys of the whole process tree) of repeated runs."""

    def __init__(self, name: str, wall: list[float], cpu: list[float]):
        self.name, self.wall, self.cpu = name, wall, cpu

    @property
    def wall_ms(self) -> float:
        return statistics.median(self.wall) * 1000

    @property
    def min_ms(self) -> float:
        return min(self.wall) * 1000

    @property
    def cpu_ms(self) -> float:
        return statistics.median(self.cpu) * 1000


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(name: str, argv: list[str], env: dict[str, str], cwd: Path, n: int) -> Timing:
    """`n` runs of argv (after one warm-up run that is not counted)."""
    wall, cpu = [], []
    for i in range(n + 1):
        cpu0, start = _cpu(), time.perf_counter()
        result = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        elapsed, used = time.perf_counter() - start, _cpu() - cpu0
        if result.returncode != 0:
            raise SystemExit(
                f"{' '.join(argv)} failed ({result.returncode}):\n{result.stderr.decode()[-2000:]}"
            )
        if i:
            wall.append(elapsed)
            cpu.append(used)
    return Timing(name, wall, cpu)


def _verdict(value: float, reference: bool) -> str:
    if reference:
        return "(reference)"
    return f"< {TARGET_MS:.0f} ms: " + ("ok" if value < TARGET_MS else "MISSED")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=15, help="repeats per command (median reported)")
    parser.add_argument("--no-mlflow", action="store_true", help="skip the mlflow rows")
    parser.add_argument(
        "--no-compile", action="store_true", help="don't byte-compile mlkit first (an installed package is)"
    )
    args = parser.parse_args()
    if not args.no_compile:  # with PYTHONDONTWRITEBYTECODE=1 an editable checkout recompiles every run
        import compileall

        import mlkit

        compileall.compile_dir(Path(mlkit.__file__).parent, quiet=1)

    has_mlflow = not args.no_mlflow and _importable("mlflow")
    py = sys.executable
    tmp = Path(tempfile.mkdtemp(prefix="mlkit-bench-run-"))
    try:
        project = tmp / "project"
        project.mkdir()
        (project / "MLproject").write_text(MLPROJECT)
        (project / "noop.py").write_text("pass\n")
        base = {k: v for k, v in os.environ.items() if not k.startswith(("MLKIT_", "MLFLOW_"))}
        mlkit_env = base | {
            "MLKIT_TRACKING_URI": str(tmp / "mlkit-store"),
            "MLKIT_STATE_DIR": str(tmp / "state"),
        }
        mlflow_env = base | {
            "MLFLOW_ALLOW_FILE_STORE": "true",
            "MLFLOW_TRACKING_URI": (tmp / "mlflow-store").as_uri(),
        }
        n = args.n
        mlkit_cmd, mlflow_cmd = _program("mlkit"), _program("mlflow")
        direct = measure("python noop.py (direct)", [py, "noop.py"], base, project, n)
        runs = [
            measure("mlkit run", [*mlkit_cmd, "run", str(project), "--env-manager", "local", "--gpus", "none",
                                  "--system-metrics-interval", "0"], mlkit_env, tmp, n),
        ]  # fmt: skip
        if has_mlflow:
            runs.append(measure("mlflow run", [*mlflow_cmd, "run", str(project), "--env-manager", "local"],
                                mlflow_env, tmp, n))  # fmt: skip
        bare = measure("python -c pass", [py, "-c", "pass"], base, tmp, n)
        helps = [measure("mlkit --help", [*mlkit_cmd, "--help"], mlkit_env, tmp, n)]
        if has_mlflow:
            helps.append(measure("mlflow --help", [*mlflow_cmd, "--help"], mlflow_env, tmp, n))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"# `mlkit run` overhead ({platform.node()}, Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, median of {n}; CPU = user+sys of the process tree; "
          f"started as `{' '.join(Path(a).name for a in mlkit_cmd)}` and `{' '.join(Path(a).name for a in mlflow_cmd)}`)\n")  # fmt: skip
    print("| command | wall ms | min ms | CPU ms | overhead over direct (wall / CPU) ms | target |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for t in [direct, *runs]:
        over, over_cpu = t.wall_ms - direct.wall_ms, t.cpu_ms - direct.cpu_ms
        verdict = "" if t is direct else _verdict(over, t.name.startswith("mlflow"))
        print(
            f"| {t.name} | {t.wall_ms:.0f} | {t.min_ms:.0f} | {t.cpu_ms:.0f} | {over:+.0f} / {over_cpu:+.0f} | {verdict} |"
        )
    print()
    print("| command | wall ms | min ms | CPU ms | minus `python -c pass` (wall) ms | target |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for t in [bare, *helps]:
        verdict = "" if t is bare else _verdict(t.wall_ms, t.name.startswith("mlflow"))
        print(
            f"| {t.name} | {t.wall_ms:.0f} | {t.min_ms:.0f} | {t.cpu_ms:.0f} | {t.wall_ms - bare.wall_ms:+.0f} | {verdict} |"
        )


def _program(name: str) -> list[str]:
    """The console script `name` beside this interpreter, else `python -m name`."""
    script = Path(sys.executable).with_name(name)
    return [str(script)] if script.exists() else [sys.executable, "-m", name]


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


if __name__ == "__main__":
    main()
