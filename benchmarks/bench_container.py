"""What a docker_env run through `mlkit run` costs over a bare `podman run` / `docker run` of the
same image and command, with the image already there (and beside it MLflow's docker path, when the
docker Python SDK that MLflow needs is installed).

    python benchmarks/bench_container.py            # 7 repeats, every engine that works here
    python benchmarks/bench_container.py -n 3 --engine podman

It sets the engines up as the `container` tests do (tests/containers/ctr_support.py: podman with a
containers.conf in a scratch directory, dockerd on private paths, the host's Python imported as the
base image; no registry) and removes what it made. Timed, wall clock, median of N:

- bare:  `<engine> run --rm --init IMAGE python -c pass`
- mlkit: `mlkit run PROJ --container-engine <engine> --gpus none --system-metrics-interval 0`
  (a new run in a fresh store each time: engine check, image inspect, run, tracking)
- mlflow: `mlflow run PROJ --build-image` (MLflow re-tags and re-inspects the image each time)

Target: mlkit - bare < 1.5 s. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "containers"))
from ctr_support import BASE_TAG, Dockerd, base_rootfs_tar, import_image, podman_env  # noqa: E402

TARGET_S = 1.5
MLPROJECT = f"""name: bench
docker_env:
  image: {BASE_TAG}
entry_points:
  main:
    command: "python -c pass"
"""


def _time(argv: list[str], env: dict[str, str], n: int, cwd: Path, fresh: Path | None = None) -> list[float]:
    times = []
    for _ in range(n):
        if fresh is not None:
            shutil.rmtree(fresh, ignore_errors=True)
        t0 = time.perf_counter()
        done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if done.returncode != 0:
            raise SystemExit(f"failed: {' '.join(argv)}\n{done.stderr[-2000:]}")
    return times


def _mlflow_ready() -> str | None:
    try:
        import docker  # noqa: F401  (MLflow's docker path imports the docker SDK)
        import mlflow  # noqa: F401
    except ImportError as exc:
        return f"not runnable here: {exc}"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=7)
    parser.add_argument("--engine", choices=["podman", "docker"], action="append")
    args = parser.parse_args()
    engines = args.engine or ["podman", "docker"]
    work = Path(tempfile.mkdtemp(prefix="mlkit-bench-ctr-", dir="/tmp"))
    dockerd = Dockerd(work)
    rows = []
    try:
        tar = base_rootfs_tar(work / "base.tar")
        proj = work / "proj"
        proj.mkdir()
        (proj / "MLproject").write_text(MLPROJECT)
        for name in engines:
            if name == "podman":
                extra = podman_env(work)
                if extra is None:
                    rows.append((name, None, None, None, "podman is not installed"))
                    continue
            else:
                why = dockerd.start()
                if why is not None:
                    rows.append((name, None, None, None, why))
                    continue
                extra = dockerd.env
            env = {**os.environ, **extra, "MLKIT_TRACKING_URI": str(work / "mlruns"),
                   "MLKIT_ENV_DIR": str(work / "envs"), "MLKIT_STATE_DIR": str(work / "state")}  # fmt: skip
            import_image(name, env, tar)
            bare = [name, "run", "--rm", "--init", BASE_TAG, "python", "-c", "pass"]
            _time(bare, env, 1, work)  # warm the engine's caches for both
            b = statistics.median(_time(bare, env, args.n, work))
            mk = [sys.executable, "-m", "mlkit", "run", str(proj), "--container-engine", name,
                  "--gpus", "none", "--system-metrics-interval", "0"]  # fmt: skip
            m = statistics.median(_time(mk, env, args.n, work, fresh=work / "mlruns"))
            mf_note = _mlflow_ready() if name == "docker" else "MLflow runs docker only"
            mf = None
            if mf_note is None:
                mlflow = [sys.executable, "-m", "mlflow", "run", str(proj), "--build-image"]
                mf_env = {
                    **env,
                    "MLFLOW_ALLOW_FILE_STORE": "true",
                    "MLFLOW_TRACKING_URI": str(work / "mlflow"),
                }
                mf = statistics.median(_time(mlflow, mf_env, args.n, work))
            rows.append((name, b, m, mf, mf_note or ""))
    finally:
        podman = shutil.which("podman")
        if podman and "podman" in engines:
            conf = {**os.environ, "CONTAINERS_CONF": str(work / "containers.conf")}
            subprocess.run(["podman", "rmi", "-f", BASE_TAG], env=conf, capture_output=True)
        dockerd.stop()
        shutil.rmtree(work, ignore_errors=True)
    print("| engine | bare run (s) | mlkit run (s) | mlkit - bare (s) | mlflow run --build-image (s) | note |\n"
          "|---|---:|---:|---:|---:|---|")  # fmt: skip
    for name, b, m, mf, note in rows:
        if b is None:
            print(f"| {name} | - | - | - | - | {note} |")
            continue
        over = m - b
        flag = "ok" if over < TARGET_S else f"over the {TARGET_S} s target"
        mfs = f"{mf:.2f}" if mf is not None else "-"
        print(f"| {name} | {b:.2f} | {m:.2f} | {over:.2f} ({flag}) | {mfs} | {note} |")


if __name__ == "__main__":
    main()
