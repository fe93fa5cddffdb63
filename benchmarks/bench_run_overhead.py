"""What `mlkit run` costs on top of starting the entry point yourself, next to `mlflow run`.

    python benchmarks/bench_run_overhead.py            # 15 repeats
    python benchmarks/bench_run_overhead.py -n 5 --no-mlflow

Times (wall clock, median of N) a trivial entry point (`python noop.py`) started directly, through
`mlkit run --env-manager local --gpus none --system-metrics-interval 0`, and through
`mlflow run --env-manager local` (MLFLOW_ALLOW_FILE_STORE=true, a file store), plus
`mlkit --help` and `mlflow --help`. Each tool gets a fresh temporary store. Targets: run overhead
< 150 ms, `--help` < 150 ms. Prints a markdown table.

Where `mlkit --help` time goes: `python -X importtime -m mlkit --help 2>&1 | sort -t'|' -k2 -n`.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_MS = 150.0
MLPROJECT = """name: noop
entry_points:
  main:
    command: "python noop.py"
"""


def _time(argv: list[str], env: dict[str, str], cwd: Path, n: int) -> list[float]:
    """Wall-clock seconds of `n` runs of argv (the first, a warm-up, is dropped)."""
    times = []
    for i in range(n + 1):
        start = time.perf_counter()
        result = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        elapsed = time.perf_counter() - start
        if result.returncode != 0:
            raise SystemExit(
                f"{' '.join(argv)} failed ({result.returncode}):\n{result.stderr.decode()[-2000:]}"
            )
        if i:
            times.append(elapsed)
    return times


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
        py = sys.executable

        rows: list[tuple[str, list[float]]] = []
        direct = _time([py, "noop.py"], base, project, args.n)
        rows.append(("python noop.py (direct)", direct))
        mlkit_run = [py, "-m", "mlkit", "run", str(project), "--env-manager", "local", "--gpus", "none",
                     "--system-metrics-interval", "0"]  # fmt: skip
        rows.append(("mlkit run", _time(mlkit_run, mlkit_env, tmp, args.n)))
        if has_mlflow:
            rows.append(("mlflow run", _time([py, "-m", "mlflow", "run", str(project), "--env-manager", "local"],
                                             mlflow_env, tmp, args.n)))  # fmt: skip
        help_rows = [("mlkit --help", _time([py, "-m", "mlkit", "--help"], mlkit_env, tmp, args.n))]
        if has_mlflow:
            help_rows.append(
                ("mlflow --help", _time([py, "-m", "mlflow", "--help"], mlflow_env, tmp, args.n))
            )
        bare = _time([py, "-c", "pass"], base, tmp, args.n)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    base_ms = statistics.median(direct) * 1000
    bare_ms = statistics.median(bare) * 1000
    print(f"# `mlkit run` overhead ({platform.node()}, Python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"median of {args.n})\n")  # fmt: skip
    print("| command | median ms | min ms | overhead over direct ms | target |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, times in rows:
        med, low = statistics.median(times) * 1000, min(times) * 1000
        over = med - base_ms
        target = (
            ""
            if name.startswith("python")
            else (f"< {TARGET_MS:.0f} ms: " + ("ok" if over < TARGET_MS else "MISSED"))
        )
        if name.startswith("mlflow"):
            target = "(reference)"
        print(f"| {name} | {med:.0f} | {low:.0f} | {over:+.0f} | {target} |")
    print()
    print(f"| command | median ms | min ms | minus bare `python -c pass` ({bare_ms:.0f} ms) | target |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, times in help_rows:
        med, low = statistics.median(times) * 1000, min(times) * 1000
        target = (
            "(reference)"
            if name.startswith("mlflow")
            else f"< {TARGET_MS:.0f} ms: " + ("ok" if med < TARGET_MS else "MISSED")
        )
        print(f"| {name} | {med:.0f} | {low:.0f} | {med - bare_ms:+.0f} | {target} |")


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


if __name__ == "__main__":
    main()
