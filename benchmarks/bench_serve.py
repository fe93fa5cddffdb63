"""`mlflow models serve` against `mlkit models serve`, side by side on the same registered CNN.

    python benchmarks/bench_serve.py                     # 8 s per cell, concurrency 1 and 32
    python benchmarks/bench_serve.py -d 4 -c 1 -c 8 --device cuda

The model is projects/cnn's Net (width 32, the default) logged with its digits transform (rows of
64 raw pixels in, a digit out) and registered as `cnn`, alias `champion`. Three servers answer it
on loopback; cells run one at a time, in interleaved rounds (medians shown):
  mlflow          mlflow models serve --env-manager local -m <the model directory>
  mlkit           mlkit models serve models:/cnn@champion
  mlkit+batching  the same with --max-batch-size 64 --max-batch-delay 5ms
For each concurrency C, C HTTP/1.1 keep-alive connections (one asyncio loop) each send
`{"inputs": [<one row>]}` back to back for the cell's duration; every answer is checked. Prints a
markdown table: requests/s, p50 and p99 latency (ms), and each server's ratio to MLflow.
Targets (issue 19): at concurrency 32 with batching >= 5x MLflow's requests/s; p50 at
concurrency 1 no worse than MLflow's.

The client runs on the same machine: on a 2-core box it takes a good share of the CPU from either
server. Weights are the untrained initialisation: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROW = [0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0, 0, 4, 12, 0, 0, 8, 8, 0,
       0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0, 0, 2, 14, 5, 10, 12, 0, 0, 0, 0, 6, 13, 10, 0, 0, 0]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_model(store: Path) -> Path:
    """Log and register the CNN in `store`; returns its model directory."""
    os.environ["MLKIT_TRACKING_URI"] = str(store)
    sys.path.insert(0, str(ROOT / "projects" / "cnn"))
    import numpy as np
    from model import Net

    import mlkit
    from mlkit.models.transform import image_classifier_for
    from mlkit.tracking.registry import RegistryStore

    net = Net(in_channels=1, num_classes=10).eval()
    with mlkit.start_run():
        info = mlkit.log_model(
            net,
            "model",
            input_example=np.asarray([ROW, ROW], dtype=np.float64),
            transform=image_classifier_for("digits", (1, 8, 8), 10),
            registered_model_name="cnn",
        )
    RegistryStore(store).set_alias("cnn", "champion", 1)
    return info.path


class Server:
    def __init__(self, name: str, argv: list[str], port: int, env: dict[str, str]) -> None:
        self.name, self.port = name, port
        self.proc = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{name} exited: {self.proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/ping")
                if conn.getresponse().status == 200:
                    conn.close()
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise SystemExit(f"{name} did not start in 180 s")

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def load(port: int, concurrency: int, seconds: float) -> tuple[int, list[float], int]:
    """(answers, latencies in s, failures) of C keep-alive connections for `seconds`, driven by one
    asyncio loop (a thread per connection would spend the 2 cores on the client itself)."""
    body = json.dumps({"inputs": [ROW]}).encode()
    request = (
        f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    failures = 0

    async def client(stop_at: float) -> None:
        nonlocal failures
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            data = await reader.readexactly(length)
            latencies.append(time.perf_counter() - t0)
            if not head.startswith(b"HTTP/1.1 200") or json.loads(data)["predictions"][0] not in range(10):
                failures += 1
        writer.close()

    async def run() -> None:
        stop_at = time.monotonic() + seconds
        await asyncio.gather(*(client(stop_at) for _ in range(concurrency)))

    asyncio.run(run())
    return len(latencies), latencies, failures


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-d", "--duration", type=float, default=8.0, help="seconds per cell (default: 8)")
    p.add_argument(
        "-c", "--concurrency", type=int, action="append", help="client threads (default: 1 and 32)"
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda: mlkit's --gpus none or 1 (default: cpu)")
    p.add_argument(
        "-r", "--rounds", type=int, default=3, help="interleaved rounds; medians are shown (default: 3)"
    )
    p.add_argument("--no-mlflow", action="store_true", help="skip mlflow models serve")
    args = p.parse_args()
    levels = args.concurrency or [1, 32]
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    store = tmp / "mlruns"
    model_dir = make_model(store)
    env = {"MLKIT_TRACKING_URI": str(store), "MLKIT_STATE_DIR": str(tmp / "state")}
    gpus = "none" if args.device == "cpu" else "1"
    mlkit = [sys.executable, "-m", "mlkit", "models", "serve", "models:/cnn@champion", "--gpus", gpus]
    configs = []
    if not args.no_mlflow:
        mlflow_env = {"MLFLOW_DEFAULT_PREDICTION_DEVICE": args.device}
        configs.append(("mlflow", lambda port: [shutil.which("mlflow") or "mlflow", "models", "serve", "--env-manager",
                        "local", "-m", str(model_dir), "-p", str(port), "-h", "127.0.0.1"], mlflow_env))  # fmt: skip
    configs.append(("mlkit", lambda port: [*mlkit, "--port", str(port)], {}))
    configs.append(
        (
            "mlkit+batching",
            lambda port: [*mlkit, "--port", str(port), "--max-batch-size", "64", "--max-batch-delay", "5ms"],
            {},
        )
    )
    servers = []
    samples: dict[tuple[str, int], list[tuple[float, float, float, int]]] = {}
    try:
        for name, argv, extra in configs:
            port = free_port()
            servers.append(Server(name, argv(port), port, {**env, **extra}))
            load(port, 4, 1.0)  # warm-up
        # interleaved rounds: a box shared with other work drifts, and each server sees the same drift
        for _ in range(args.rounds):
            for c in levels:
                for server in servers:
                    n, lat, bad = load(server.port, c, args.duration)
                    cell = (n / args.duration, 1000 * statistics.median(lat), 1000 * quantile(lat, 0.99), bad)
                    samples.setdefault((server.name, c), []).append(cell)
                    print(f"{server.name:15s} c={c:3d}: {cell[0]:8.1f} req/s  p50 {cell[1]:.2f} ms"
                          f"  p99 {cell[2]:.2f} ms  failed {bad}", file=sys.stderr)  # fmt: skip
    finally:
        for server in servers:
            server.stop()
    results = {
        key: (
            statistics.median(v[0] for v in cells),
            statistics.median(v[1] for v in cells),
            statistics.median(v[2] for v in cells),
            sum(v[3] for v in cells),
        )
        for key, cells in samples.items()
    }
    shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n{platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}, device {args.device}, "
          f"median of {args.rounds} rounds of {args.duration:g} s per cell, load average {os.getloadavg()[0]:.1f}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")  # fmt: skip
    print(
        "| server | concurrency | requests/s | p50 ms | p99 ms | failed | req/s vs mlflow | p50 vs mlflow |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for (name, c), (rps, p50, p99, bad) in results.items():
        base = results.get(("mlflow", c))
        ratio = f"{rps / base[0]:.2f}x" if base else "-"
        p50_ratio = f"{p50 / base[1]:.2f}x" if base else "-"
        print(f"| {name} | {c} | {rps:.1f} | {p50:.2f} | {p99:.2f} | {bad} | {ratio} | {p50_ratio} |")


if __name__ == "__main__":
    main()
