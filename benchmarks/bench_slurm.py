"""The Slurm backend's costs against Slurm's own commands, on a real single-node cluster started
as the `slurm` tests start it (tests/slurm/cluster.py: scratch directory, no systemd, fake GPUs;
with slurmdbd when it is installed). Needs root and slurm-wlm + munge.

    python benchmarks/bench_slurm.py            # 7 repeats
    python benchmarks/bench_slurm.py -n 3 --live 100 --runs 1000

Timed, wall clock, median of N:
- bare submit:  `sbatch job.sh` of the script mlkit wrote (the job held with --begin, so the queue
                does not run it)
- mlkit submit: `mlkit run PROJ --backend slurm` (a fresh process: checks, run created SCHEDULED,
                script written, sbatch, tags)                             target: < 0.3 s more
- runs list:    `mlkit runs list -n RUNS` over RUNS runs of which LIVE are pending Slurm jobs,
                counting the squeue/sacct calls it makes (shims on PATH)  target: 1 + 1 calls, < 1 s
- bare query:   one `squeue -j <LIVE ids>` (what listing must at least ask)
Prints a markdown table.
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
sys.path.insert(0, str(REPO / "tests" / "slurm"))
from cluster import Cluster, missing  # noqa: E402

MLPROJECT = 'name: bench\nentry_points:\n  main:\n    command: "python -c pass"\n'


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - t0, out.stdout


def shims(bin_dir: Path, log: Path) -> None:
    """squeue/sacct wrappers that count their calls, then run the real command."""
    for name in ("squeue", "sacct"):
        real = shutil.which(name)
        (bin_dir / name).write_text(f'#!/bin/sh\necho {name} >> "{log}"\nexec {real} "$@"\n')
        (bin_dir / name).chmod(0o755)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=7)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--live", type=int, default=100)
    args = ap.parse_args()
    why = missing()
    if why:
        print(f"cannot run: {why}", file=sys.stderr)
        return 1
    scratch = Path(tempfile.mkdtemp(prefix="bench-slurm-"))
    cluster = Cluster(scratch / "cluster")
    (scratch / "cluster").mkdir()
    accounting = shutil.which("slurmdbd") is not None and shutil.which("mariadb-install-db") is not None
    try:
        cluster.start(accounting=accounting)
        env = {**os.environ, **cluster.env, "MLKIT_TRACKING_URI": str(scratch / "mlruns"),
               "MLKIT_STATE_DIR": str(scratch / "state"), "XDG_CONFIG_HOME": str(scratch / "xdg")}  # fmt: skip
        env.pop("MLKIT_SLURM_CONFIG", None)
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: compiled once, not at every start
        version = subprocess.run(["sinfo", "-V"], env=env, capture_output=True, text=True).stdout.strip()
        proj = scratch / "proj"
        proj.mkdir()
        (proj / "MLproject").write_text(MLPROJECT)
        held = "begin=now+1hour"  # submitted and queued, never run: the benchmark measures submission
        mlkit_submit = [sys.executable, "-m", "mlkit", "run", str(proj), "--backend", "slurm",
                        "--env-manager", "local", "--backend-config", held]  # fmt: skip
        subprocess.run(mlkit_submit, env=env, check=True, capture_output=True)  # warm-up (and a script)
        script = next((scratch / "mlruns").glob("0/*/artifacts/slurm/job.sh"))
        mlkit_t, bare_t, start_t = [], [], []
        for _ in range(args.n):
            bare_t.append(timed(["sbatch", "--parsable", "--begin=now+1hour", str(script)], env)[0])
            mlkit_t.append(timed(mlkit_submit, env)[0])
            start_t.append(timed([sys.executable, "-m", "mlkit", "--version"], env)[0])
        subprocess.run(["scancel", "-u", "root"], env=env, check=False)
        cluster.wait_empty()

        # 1,000 runs, LIVE of them pending Slurm jobs
        sys.path.insert(0, str(REPO))
        os.environ.update({k: env[k] for k in ("MLKIT_TRACKING_URI", "SLURM_CONF")})
        from mlkit.tracking.store import FileStore

        store = FileStore(scratch / "mlruns")
        ids, live_ids = [], []
        for i in range(args.runs):
            live = i < args.live
            run = store.create_run("0", status="SCHEDULED" if live else "RUNNING", tags={"bench.i": str(i)})
            store.log_params(run.info.run_id, {"lr": str(0.001 * (i % 7)), "i": str(i)})
            if live:
                job = subprocess.run(["sbatch", "--parsable", "--begin=now+1hour", "-o", "/dev/null", "--wrap", "true"],
                                     env=env, capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
                ids.append(job)
                live_ids.append(run.info.run_id)
                store.set_tags(run.info.run_id, {"mlkit.slurm.job_id": job})
            else:
                store.set_terminated(run.info.run_id, "FINISHED")
        bin_dir = scratch / "shims"
        bin_dir.mkdir()
        calls = scratch / "calls.log"
        shims(bin_dir, calls)
        list_env = {**env, "PATH": f"{bin_dir}:{env['PATH']}"}
        list_cmd = [sys.executable, "-m", "mlkit", "runs", "list", "-n", str(args.runs), "--csv"]
        timed(list_cmd, list_env)  # builds the search cache once
        list_t, per_call = [], []
        for _ in range(args.n):
            calls.write_text("")
            seconds, out = timed(list_cmd, list_env)
            list_t.append(seconds)
            per_call.append(calls.read_text().split())
        squeue_t = [timed(["squeue", "-h", "-r", "-j", ",".join(ids)], env)[0] for _ in range(args.n)]
        from mlkit.backends.slurm.status import reconcile

        live_runs = [store.get_run(i) for i in live_ids]
        recon_t = []
        for _ in range(args.n):
            t0 = time.perf_counter()
            reconcile(store, live_runs)
            recon_t.append(time.perf_counter() - t0)
        rows = out.count(" PENDING")
    finally:
        subprocess.run(
            ["scancel", "-u", "root"], env={**os.environ, **cluster.env}, check=False, capture_output=True
        )
        cluster.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    med = statistics.median
    load = os.getloadavg()[0]
    print(f"{version}, "
          f"accounting={'slurmdbd' if accounting else 'none'}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"load average {load:.1f}, median of {args.n}\n")  # fmt: skip
    print("| operation | mlkit | Slurm alone | difference / ratio | target |")
    print("| --- | ---: | ---: | ---: | --- |")
    diff = med(mlkit_t) - med(bare_t)
    ok = "✔" if diff < 0.3 else "✘"
    print(
        f"| submit one run | {med(mlkit_t):.3f} s | {med(bare_t):.3f} s (`sbatch`) | +{diff:.3f} s | < +0.3 s {ok} |"
    )
    print(f"| (of which: starting mlkit, `mlkit --version`) | {med(start_t):.3f} s | | | |")
    kinds = sorted({" + ".join(c) or "none" for c in per_call})
    ok = (
        "✔"
        if med(list_t) < 1.0 and all(c == ["squeue"] or c == ["squeue", "sacct"] for c in per_call)
        else "✘"
    )
    print(f"| `runs list` {args.runs} runs, {args.live} live jobs ({rows} shown pending) | {med(list_t):.3f} s "
          f"| {med(squeue_t):.3f} s (one `squeue`) | {med(list_t) / med(squeue_t):.1f}× | "
          f"calls: {', '.join(kinds)}; < 1 s {ok} |")  # fmt: skip
    print(f"| (of which: asking Slurm, `reconcile` of the {args.live} live runs in-process) "
          f"| {med(recon_t):.3f} s | | | |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
