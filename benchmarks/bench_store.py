"""mlkit's file store against MLflow's FileStore, side by side on this machine.

    python benchmarks/bench_store.py              # full size: 10,000 runs
    python benchmarks/bench_store.py --runs 1000  # quicker

Measures log_metric calls/s in one run and search_runs over N runs (5 params, 5 metrics x 10
steps, 3 tags each) with `metrics.acc > 0.5 and params.lr = '0.01'`. The N-run store is written
once by mlkit and copied for MLflow (the on-disk format is the same; MLflow would need minutes
to write it itself). Prints a markdown table with the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"

FILTER = "metrics.acc > 0.5 and params.lr = '0.01'"
LRS = ("0.1", "0.01", "0.001", "0.0001")


def build_store(root: Path, n_runs: int) -> str:
    """Write n_runs runs with mlkit (5 params, 5 metrics x 10 steps, 3 tags); return the experiment id."""
    from mlkit.tracking.store import FileStore

    store = FileStore(root)
    exp = store.get_or_create_experiment("bench")
    for i in range(n_runs):
        run_id = store.create_run(exp, run_name=f"run-{i}").info.run_id
        store.log_params(run_id, {"lr": LRS[i % 4], "batch": str(32 << (i % 3)), "seed": str(i),
                                  "optimizer": "adam", "epochs": "10"})  # fmt: skip
        for step in range(10):
            store.log_metrics(run_id, {"acc": ((i * 7919) % 1000) / 1000 * (step + 1) / 10, "loss": 1 / (step + 1),
                                       "val_acc": 0.5, "val_loss": 0.7, "lr_now": 0.01}, step=step)  # fmt: skip
        store.set_tags(run_id, {"team": "vision", "purpose": "bench", "shard": str(i % 10)})
        store.set_terminated(run_id, "FINISHED")
    store.close()
    return exp


def _rate(fn, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - start)


def bench_log_metric(tmp: Path, n: int) -> dict[str, float]:
    """log_metric calls/s in one run: store/client level and fluent, mlkit and MLflow."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from mlkit.tracking.client import MlkitClient

    out = {}
    mk = MlkitClient(tmp / "mk-client")
    run = mk.create_run("0").info.run_id
    out["mlkit client"] = _rate(lambda i: mk.log_metric(run, "loss", 0.5, step=i), n)
    mf = MlflowClient(tracking_uri=(tmp / "mf-client").as_uri())
    mrun = mf.create_run("0").info.run_id
    out["mlflow client"] = _rate(lambda i: mf.log_metric(mrun, "loss", 0.5, step=i), max(n // 10, 500))

    import mlkit

    os.environ["MLKIT_TRACKING_URI"] = str(tmp / "mk-fluent")
    with mlkit.start_run():
        out["mlkit fluent"] = _rate(lambda i: mlkit.log_metric("loss", 0.5, step=i), n)
    mlflow.set_tracking_uri((tmp / "mf-fluent").as_uri())
    with mlflow.start_run():
        out["mlflow fluent"] = _rate(lambda i: mlflow.log_metric("loss", 0.5, step=i), max(n // 10, 500))
    return out


def bench_search(tmp: Path, n_runs: int, reuse: Path | None = None) -> dict[str, float | int]:
    """search_runs seconds over n_runs: mlkit cold (builds the cache), mlkit warm, MLflow."""
    from mlflow.store.tracking.file_store import FileStore as MlflowFileStore

    from mlkit.tracking.store import FileStore

    root = tmp / "mlruns"
    start = time.perf_counter()
    if reuse is None:
        exp = build_store(root, n_runs)
    else:  # a store an earlier build_store() wrote: skip the slow part
        shutil.copytree(reuse, root)
        _drop_cache(root)
        exp = FileStore(root).get_or_create_experiment("bench")
    build_s = time.perf_counter() - start
    mlflow_root = tmp / "mlruns-mlflow"
    shutil.copytree(root, mlflow_root)  # same bytes; MLflow gets no index file
    _drop_cache(mlflow_root)
    rsynced = tmp / "mlruns-rsynced"  # the same store with no cache at all: as MLflow wrote it, or rsynced in
    shutil.copytree(mlflow_root, rsynced)

    # mlkit's searches run in a fresh process of their own, as `mlkit runs list` would: this one has
    # MLflow imported (hundreds of thousands of objects that slow every garbage collection)
    measured = subprocess.run(
        [sys.executable, __file__, "--measure-mlkit", str(root), exp],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    mine = json.loads(measured.stdout)
    measured = subprocess.run(
        [sys.executable, __file__, "--measure-mlkit", str(rsynced), exp],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    cold_files = json.loads(measured.stdout)["cold"]
    shutil.rmtree(rsynced)
    cold, runs_ids, cold_ids, top_ids = mine["cold"], mine["ids"], mine["cold_ids"], mine["top_ids"]
    mlflow_store = MlflowFileStore(str(mlflow_root))
    from mlflow.entities import ViewType

    start = time.perf_counter()
    mruns = mlflow_store.search_runs([exp], FILTER, ViewType.ACTIVE_ONLY, max_results=50000)
    mlflow_s = time.perf_counter() - start
    start = time.perf_counter()
    mtop = mlflow_store.search_runs(
        [exp], "", ViewType.ACTIVE_ONLY, max_results=10, order_by=["metrics.acc DESC"]
    )
    mlflow_top = time.perf_counter() - start
    same = runs_ids == [r.info.run_id for r in mruns] == cold_ids
    same = same and top_ids == [r.info.run_id for r in mtop]
    return {"build_s": build_s, "cold": cold, "cold_files": cold_files, "warm": mine["warm"], "mlflow": mlflow_s,
            "top": mine["top"], "mlflow_top": mlflow_top, "matches": len(runs_ids), "same": same}  # fmt: skip


def _drop_cache(root: Path) -> None:
    """Remove mlkit's search cache and its writers' journals: the store as MLflow would leave it."""
    from mlkit.tracking.index import INDEX_FILE
    from mlkit.tracking.runsummary import JOURNAL_FILE

    for path in [root / INDEX_FILE, *root.glob(f"*/{JOURNAL_FILE}*")]:
        path.unlink(missing_ok=True)


def bench_scale(root: Path, n_runs: int) -> dict[str, float | int]:
    """mlkit alone at a large scale (--no-mlflow, e.g. --runs 100000): the first search of the store
    mlkit wrote, the warm search, `mlkit runs list` (50 rows), and a search process's peak memory.
    The store is written into `root` once and reused when it is already there."""
    from mlkit.tracking.store import FileStore

    start = time.perf_counter()
    if not (root / "meta.yaml").exists() and not any(root.glob("*/meta.yaml")):
        exp = build_store(root, n_runs)
    else:
        exp = FileStore(root).get_or_create_experiment("bench")
    build_s = time.perf_counter() - start
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    mine = json.loads(subprocess.run([sys.executable, __file__, "--measure-mlkit", str(root), exp],
                                     capture_output=True, text=True, check=True, env=env).stdout)  # fmt: skip
    rss = json.loads(subprocess.run([sys.executable, __file__, "--measure-rss", str(root), exp],
                                    capture_output=True, text=True, check=True, env=env).stdout)  # fmt: skip
    lists = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mlkit", "runs", "list", "-x", "bench", "-n", "50", "--store", str(root)],
                       capture_output=True, check=True, env=env)  # fmt: skip
        lists.append(time.perf_counter() - start)
    return {"build_s": build_s, "cold": mine["cold"], "warm": mine["warm"], "top": mine["top"],
            "page": mine["page"], "page_min": mine["page_min"], "warm_min": mine["warm_min"],
            "matches": len(mine["ids"]), "list": statistics.median(lists), **rss}  # fmt: skip


def measure_rss(root: Path, exp: str) -> dict[str, float]:
    """In this fresh process: peak resident memory before and after one warm filtered search."""
    import resource

    from mlkit.tracking.store import FileStore

    store = FileStore(root)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    store.search_runs([exp], FILTER, max_results=50000)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rss_before_mb": before, "rss_peak_mb": after}


def measure_mlkit(root: Path, exp: str) -> dict:
    """In this (fresh) process: the cold search that builds the cache, then warm ones."""
    from mlkit.tracking.store import FileStore

    start = time.perf_counter()
    cold_runs, _ = FileStore(root).search_runs([exp], FILTER, max_results=50000)
    cold = time.perf_counter() - start
    warm_times = []
    for _ in range(5):
        store = FileStore(root)  # a new process would open a new store: no in-memory state kept
        start = time.perf_counter()
        runs, _ = store.search_runs([exp], FILTER, max_results=50000)
        warm_times.append(time.perf_counter() - start)
    page_times = []  # MLflow's default page (MlflowClient.search_runs: max_results=1000)
    for _ in range(5):
        store = FileStore(root)
        start = time.perf_counter()
        page, _ = store.search_runs([exp], FILTER, max_results=1000)
        page_times.append(time.perf_counter() - start)
    top_times = []
    for _ in range(3):
        store = FileStore(root)
        start = time.perf_counter()
        top, _ = store.search_runs([exp], "", ["metrics.acc DESC"], max_results=10)
        top_times.append(time.perf_counter() - start)
    assert [r.info.run_id for r in page] == [r.info.run_id for r in runs][:1000]
    return {"cold": cold, "warm": statistics.median(warm_times), "top": statistics.median(top_times),
            "page": statistics.median(page_times), "page_min": min(page_times), "warm_min": min(warm_times),
            "ids": [r.info.run_id for r in runs], "cold_ids": [r.info.run_id for r in cold_runs],
            "top_ids": [r.info.run_id for r in top]}  # fmt: skip


def main() -> int:
    """Run both benchmarks and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000, help="runs in the search store (default 10000)")
    parser.add_argument("--calls", type=int, default=20_000, help="log_metric calls for mlkit (MLflow: 1/10)")
    parser.add_argument(
        "--reuse", type=Path, help="copy this store (written by build_store) instead of building one"
    )
    parser.add_argument(
        "--no-mlflow", action="store_true",
        help="mlkit alone (for --runs 100000): first and warm search, runs list, peak memory",
    )  # fmt: skip
    parser.add_argument(
        "--store-dir", type=Path, help="with --no-mlflow: write the store here once, reuse it after"
    )
    parser.add_argument("--measure-mlkit", nargs=2, metavar=("ROOT", "EXP"), help=argparse.SUPPRESS)
    parser.add_argument("--measure-rss", nargs=2, metavar=("ROOT", "EXP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_mlkit:
        print(json.dumps(measure_mlkit(Path(args.measure_mlkit[0]), args.measure_mlkit[1])))
        return 0
    if args.measure_rss:
        print(json.dumps(measure_rss(Path(args.measure_rss[0]), args.measure_rss[1])))
        return 0
    if args.no_mlflow:
        return print_scale(args)
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    tmp = Path(tempfile.mkdtemp(prefix="mlkit-bench-"))
    try:
        rates = bench_log_metric(tmp, args.calls)
        search = bench_search(tmp, args.runs, args.reuse)
        print_table(args, rates, search)
    finally:  # removing 40,000 run directories can take minutes: the table is out first
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def print_table(args: argparse.Namespace, rates: dict[str, float], search: dict[str, float | int]) -> None:
    """The markdown table of bench_log_metric and bench_search."""
    import mlflow

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"MLflow {mlflow.__version__}, {time.strftime('%Y-%m-%d %H:%M')}, load average at the end: {load}")  # fmt: skip
    how = f"copied from {args.reuse}" if args.reuse else "written by mlkit"
    print(f"search store: {args.runs} runs {how} in {search['build_s']:.1f} s, copied for MLflow "
          "(same on-disk format); filter: " + FILTER)  # fmt: skip
    print(f"mlkit and MLflow return the same run ids in the same order ({search['matches']} for the filter, "
          f"top 10 for the order_by): {search['same']}\n")  # fmt: skip
    print("| operation | mlkit | MLflow FileStore | ratio |")
    print("| --- | --- | --- | --- |")
    for level in ("client", "fluent"):
        mk, mf = rates[f"mlkit {level}"], rates[f"mlflow {level}"]
        print(
            f"| log_metric, one run, {level} API | {mk:,.0f} calls/s | {mf:,.0f} calls/s | {mk / mf:.0f}x |"
        )
    first = "first search of the store mlkit wrote (its writers kept the cache current)"
    if args.reuse:
        first = "first search (the copied store has no cache: it is built)"
    for label, key in (("warm cache", "warm"), (first, "cold"),
                       ("first search, no cache at all (a store MLflow wrote, or rsynced in)", "cold_files")):  # fmt: skip
        ratio = search["mlflow"] / search[key]
        print(f"| search_runs, {args.runs:,} runs, metric+param filter, {label} | {search[key]:.3f} s | "
              f"{search['mlflow']:.2f} s | {ratio:.{0 if ratio >= 10 else 1}f}x |")  # fmt: skip
    print(f"| search_runs, {args.runs:,} runs, order_by metrics.acc DESC, top 10, warm cache | {search['top']:.3f} s | "
          f"{search['mlflow_top']:.2f} s | {search['mlflow_top'] / search['top']:.0f}x |", flush=True)  # fmt: skip


def print_scale(args: argparse.Namespace) -> int:
    """--no-mlflow: measure mlkit alone and print its table with the issue's targets."""
    with tempfile.TemporaryDirectory(prefix="mlkit-bench-") as tmp_name:
        root = args.store_dir or Path(tmp_name) / "mlruns"
        r = bench_scale(root, args.runs)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}, load average at the end: {load}")  # fmt: skip
    print(f"store: {args.runs:,} runs written by mlkit ({r['build_s']:.0f} s); filter: {FILTER} "
          f"({r['matches']:,} match)\n")  # fmt: skip
    print("| operation | mlkit | target |")
    print("| --- | ---: | --- |")
    print(f"| search_runs, filtered, first search of the store mlkit wrote | {r['cold']:.3f} s | |")
    print(f"| search_runs, filtered, warm, all {r['matches']:,} matches (max_results=50000; median, min of 5) "
          f"| {r['warm']:.3f} s, {r['warm_min']:.3f} s | < 1 s |")  # fmt: skip
    print(f"| the same, MLflow's default page (max_results=1000; median, min of 5) "
          f"| {r['page']:.3f} s, {r['page_min']:.3f} s | < 1 s |")  # fmt: skip
    print(f"| search_runs, order_by metrics.acc DESC, top 10, warm | {r['top']:.3f} s | |")
    print(f"| `mlkit runs list -x bench -n 50` (a whole process) | {r['list']:.3f} s | < 1 s |")
    print(f"| peak memory of a process doing one filtered search (before it: {r['rss_before_mb']:.0f} MB) "
          f"| {r['rss_peak_mb']:.0f} MB | < 500 MB |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
