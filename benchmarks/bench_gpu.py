"""GPU-side costs of mlkit: `mlkit gpus --json` latency, one sampler tick's CPU, and (with a GPU and
torch) training throughput with system-metrics sampling on vs off.

    python benchmarks/bench_gpu.py                  # everything this machine can do
    python benchmarks/bench_gpu.py --seconds 20 --json

Without a GPU the tick cost is measured through the stand-in NVML (MLKIT_FAKE_NVML=four_idle) and
the throughput comparison is reported as needing a GPU. Targets: a tick < 5 ms CPU; sampling at
1 s costs <= 1 % of training throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def bench_gpus_json(runs: int, env_extra: dict[str, str] | None = None) -> dict:
    """Wall time of `python -m mlkit gpus --json` as a subprocess, median of `runs`."""
    env = {**os.environ, **(env_extra or {})}
    times = []
    doc = None
    for _ in range(runs):
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "mlkit", "gpus", "--json"],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
        )
        times.append(time.perf_counter() - start)
        if result.returncode != 0:
            raise SystemExit(f"mlkit gpus --json failed: {result.stderr}")
        doc = json.loads(result.stdout)
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "runs": runs,
        "gpus": len(doc["gpus"]),
        "reason": doc["reason"],
    }


def bench_tick(ticks: int, uuids: list[str]) -> dict:
    """Process CPU time per sampler tick (NVML reads + psutil + FileStore writes)."""
    from mlkit.gpu import SystemMetricsSampler
    from mlkit.tracking.store import FileStore

    with tempfile.TemporaryDirectory() as tmp:
        store = FileStore(Path(tmp) / "mlruns")
        run_id = store.create_run(store.get_or_create_experiment("bench")).info.run_id
        sampler = SystemMetricsSampler(store, run_id, uuids, interval=3600)
        sampler.start(os.getpid())
        sampler.tick()
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(ticks):
            sampler.tick()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        sampler.stop()
        store.close()
    return {
        "cpu_ms_per_tick": cpu / ticks * 1000,
        "wall_ms_per_tick": wall / ticks * 1000,
        "ticks": ticks,
        "gpus": len(uuids),
        "failed_ticks": sampler.failed_ticks,
    }


PATTERN = ["off", "on", "on", "off"] * 3
MIN_BLOCK_S = 1.0  # at least one tick of the 1 s sampler in each "on" block
MIN_SECONDS = MIN_BLOCK_S * len(PATTERN) / 2  # --seconds is the "on" time: half the blocks


def bench_training(seconds: float, uuid: str) -> dict:
    """Conv+linear training loop (bf16 autocast, SGD): iterations/s with the 1 s sampler off vs on."""
    import torch

    from mlkit.gpu import SystemMetricsSampler
    from mlkit.tracking.store import FileStore

    torch.backends.cudnn.benchmark = True
    device = "cuda"
    # GPU-bound, as real training is: ~10 ms of bf16 matmul + conv per step on an H100
    conv = torch.nn.Conv2d(128, 128, 3, padding=1).to(device, memory_format=torch.channels_last)
    lin = torch.nn.Linear(8192, 8192).to(device)
    opt = torch.optim.SGD(list(conv.parameters()) + list(lin.parameters()), lr=1e-3)
    images = torch.randn(128, 128, 56, 56, device=device).to(memory_format=torch.channels_last)
    feats = torch.randn(8192, 8192, device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = conv(images).float().square().mean() + lin(feats).float().square().mean()
        loss.backward()
        opt.step()

    def measure(duration: float) -> float:
        torch.cuda.synchronize()
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < duration:
            for _ in range(5):
                step()
            n += 5
            torch.cuda.synchronize()
        return n / (time.perf_counter() - start)

    measure(3.0)  # warm-up: cuDNN autotune, clocks up
    # Alternate off/on blocks in an ABBA pattern (off,on,on,off,...) so clock and thermal drift,
    # which moves throughput by a few % over a minute on its own, cancels out.
    pattern = PATTERN
    block = 2 * seconds / len(pattern)
    rates: dict[str, list[float]] = {"off": [], "on": []}
    ticks, energy = 0, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        store = FileStore(Path(tmp) / "mlruns")
        run_id = store.create_run(store.get_or_create_experiment("bench")).info.run_id
        for phase in pattern:
            if phase == "off":
                rates["off"].append(measure(block))
                continue
            # worst case: the sampler thread shares this process's GIL (in mlkit it lives in the
            # supervisor process, not in the training process)
            sampler = SystemMetricsSampler(store, run_id, [uuid], interval=1.0)
            sampler.start(os.getpid())
            rates["on"].append(measure(block))
            summary = sampler.stop()
            ticks += sampler.step
            energy += summary.get("system/gpu_0_energy_wh", 0.0)
        store.close()
    off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
    return {
        "iters_per_s_off": off,
        "iters_per_s_on": on,
        "slowdown_percent": (off - on) / off * 100,
        "off_block_spread_percent": (max(rates["off"]) - min(rates["off"])) / off * 100,
        "blocks": pattern,
        "rates": rates,
        "block_seconds": block,
        "ticks": ticks,
        "energy_wh_while_on": energy,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=7, help="subprocess runs of `mlkit gpus --json`")
    parser.add_argument("--ticks", type=int, default=500, help="sampler ticks to time")
    parser.add_argument(
        "--seconds",
        type=float,
        default=20.0,
        help="training seconds with sampling on (and as many off; GPU only)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as one JSON document")
    args = parser.parse_args()
    if args.seconds < MIN_SECONDS:  # shorter blocks than the sampler's interval measure nothing
        parser.error(
            f"--seconds {args.seconds:g}: each of the {len(PATTERN)} blocks must last >= "
            f"{MIN_BLOCK_S:g} s for the 1 s sampler to tick inside it; use --seconds >= {MIN_SECONDS:g}"
        )

    from mlkit.gpu import probe

    os.environ.pop("MLKIT_FAKE_NVML", None)
    report = probe(leases=[])
    real = [g for g in report.gpus if not g.lost]
    results: dict = {
        "gpus_found": len(real),
        "reason": report.reason,
        "device": real[0].name if real else None,
    }

    results["mlkit_gpus_json"] = bench_gpus_json(args.runs)
    results["mlkit_gpus_json_fake_four_idle"] = bench_gpus_json(args.runs, {"MLKIT_FAKE_NVML": "four_idle"})

    if real:
        results["tick_real_nvml_1gpu"] = bench_tick(args.ticks, [real[0].uuid])
    os.environ["MLKIT_FAKE_NVML"] = "four_idle"
    fake_uuid = probe(leases=[]).gpus[0].uuid
    results["tick_fake_nvml_1gpu"] = bench_tick(args.ticks, [fake_uuid])
    results["tick_no_gpu"] = bench_tick(args.ticks, [])
    os.environ.pop("MLKIT_FAKE_NVML")

    if not real:
        results["training"] = f"needs a GPU ({report.reason})"
    else:
        try:
            import torch

            if not torch.cuda.is_available():
                raise ImportError("torch has no CUDA")
        except ImportError as exc:
            results["training"] = f"needs torch with CUDA ({exc})"
        else:
            results["training"] = bench_training(args.seconds, real[0].uuid)

    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"GPUs: {len(real)}" + (f" ({results['device']})" if real else f" — {report.reason}"))
    for key in ("mlkit_gpus_json", "mlkit_gpus_json_fake_four_idle"):
        r = results[key]
        print(
            f"{key:34s} median {r['median_s'] * 1000:7.1f} ms  (min {r['min_s'] * 1000:.1f} ms, {r['runs']} runs)"
        )
    for key in ("tick_real_nvml_1gpu", "tick_fake_nvml_1gpu", "tick_no_gpu"):
        if key in results:
            r = results[key]
            print(
                f"{key:34s} {r['cpu_ms_per_tick']:7.3f} ms CPU/tick  ({r['wall_ms_per_tick']:.3f} ms wall, "
                f"{r['ticks']} ticks; target < 5 ms)"
            )
    training = results["training"]
    if isinstance(training, str):
        print(f"{'training throughput':34s} {training}")
    else:
        print(
            f"{'training throughput':34s} off {training['iters_per_s_off']:.1f} it/s, on (1 s sampler) "
            f"{training['iters_per_s_on']:.1f} it/s: {training['slowdown_percent']:+.2f} % (target <= 1 %; "
            f"off blocks spread {training['off_block_spread_percent']:.1f} %, {training['ticks']} ticks)"
        )


if __name__ == "__main__":
    main()
