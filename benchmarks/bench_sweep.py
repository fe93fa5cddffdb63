"""`mlkit sweep` makespan and driver overhead, against the ideal and against the shell loop users
write today (4 lanes of `mlkit run --gpus 1 --wait`, 4 trials each).

    python benchmarks/bench_sweep.py [--trials 16] [--parallel 4] [--seconds 2]

16 trials that each sleep `--seconds`, on the stand-in NVML with 4 GPUs (MLKIT_FAKE_NVML=four_idle)
and a private state dir and store. Reports: the sweep's makespan against the ideal (trials/parallel
× seconds; target: within 10 % + 2 s), the shell loop's makespan, the driver's overhead per trial
on the critical path ((sweep − loop) / trials per lane; target < 0.3 s) and the driver process's
own CPU seconds per trial. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# What a user types: the `mlkit` program beside this interpreter (`python -m mlkit` where there is none)
_SCRIPT = Path(sys.executable).with_name("mlkit")
MLKIT = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "mlkit"]

MLPROJECT = """
name: sleeper
entry_points:
  main:
    parameters:
      i: {type: int, default: 0}
      seconds: {type: float, default: 1}
    command: "python -c 'import time, sys; time.sleep(float(sys.argv[1]))' {seconds}"
"""


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_sweep(
    project: Path, env: dict[str, str], trials: int, parallel: int, seconds: float
) -> tuple[float, float]:
    """(makespan, driver CPU seconds) of one `mlkit sweep`."""
    argv = [*MLKIT, "sweep", str(project), "-P", f"i=range({trials})",
            "-P", f"seconds={seconds}", "--parallel", str(parallel), "--gpus-per-trial", "1",
            "--env-manager", "local", "--system-metrics-interval", "0"]  # fmt: skip
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cpu = 0.0
    while proc.poll() is None:
        cpu = _cpu_seconds(proc.pid) or cpu
        time.sleep(0.05)
    makespan = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"mlkit sweep failed with exit code {proc.returncode}")
    return makespan, cpu


def run_loop(project: Path, env: dict[str, str], trials: int, parallel: int, seconds: float) -> float:
    """Makespan of `parallel` shell lanes, each running its share of `mlkit run --gpus 1 --wait`."""
    lanes = []
    for lane in range(parallel):
        runs = [
            f"{' '.join(MLKIT)} run {project} -P i={i} -P seconds={seconds} --gpus 1 --wait 1h "
            "--env-manager local --system-metrics-interval 0 >/dev/null 2>&1"
            for i in range(lane, trials, parallel)
        ]
        lanes.append(" ; ".join(runs))
    t0 = time.monotonic()
    procs = [subprocess.Popen(["/bin/sh", "-c", lane], env=env) for lane in lanes]
    for p in procs:
        p.wait()
    return time.monotonic() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        project = root / "proj"
        project.mkdir()
        (project / "MLproject").write_text(textwrap.dedent(MLPROJECT).lstrip())
        env = {
            **os.environ,
            "MLKIT_FAKE_NVML": "four_idle",
            "MLKIT_STATE_DIR": str(root / "state"),
            "MLKIT_TRACKING_URI": str(root / "mlruns"),
            "MLKIT_CACHE_DIR": str(root / "cache"),
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
            "OMP_NUM_THREADS": "1",
        }
        sweep, cpu = run_sweep(project, env, args.trials, args.parallel, args.seconds)
        loop = run_loop(project, env, args.trials, args.parallel, args.seconds)
    per_lane = args.trials / args.parallel
    ideal = per_lane * args.seconds
    target = ideal * 1.1 + 2
    overhead = (sweep - loop) / per_lane
    load = os.getloadavg()[0]
    print(f"{args.trials} trials of {args.seconds:g} s, --parallel {args.parallel}, 4 stand-in GPUs; "
          f"load average {load:.1f}\n")  # fmt: skip
    print("| measure | value | target |")
    print("| --- | ---: | --- |")
    print(f"| ideal makespan ({per_lane:g} rounds × {args.seconds:g} s) | {ideal:.2f} s | — |")
    print(f"| `mlkit sweep` makespan | {sweep:.2f} s ({sweep / ideal:.2f}× ideal) | ≤ {target:.1f} s "
          f"{'✔' if sweep <= target else '✘'} |")  # fmt: skip
    print(
        f"| shell loop: {args.parallel} lanes of `mlkit run --gpus 1 --wait` | {loop:.2f} s ({loop / ideal:.2f}× ideal) | — |"
    )
    print(f"| sweep over the loop | {sweep / loop:.2f}× | — |")
    print(f"| driver overhead per trial on the critical path ((sweep − loop) / {per_lane:g}) | {overhead:+.3f} s | "
          f"< 0.3 s {'✔' if overhead < 0.3 else '✘'} |")  # fmt: skip
    print(f"| driver CPU per trial | {cpu / args.trials:.3f} s | — |")


if __name__ == "__main__":
    main()
