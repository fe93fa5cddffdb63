"""Eight real processes writing to one store at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mlkit.tracking.store import FileStore

WRITER = r"""
import sys, time
from mlkit.tracking.store import FileStore
root, start_at, worker = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
store = FileStore(root)
while time.time() < start_at:
    time.sleep(0.001)
exp = store.get_or_create_experiment("shared")
run_id = store.create_run(exp, run_name=f"w{worker}").info.run_id
store.log_param(run_id, "worker", worker)
for step in range(N_STEPS):
    store.log_metric(run_id, "loss", worker + step / 1000, step=step)
    store.log_metric(run_id, "shared/x", step, step=step)
store.set_terminated(run_id, "FINISHED")
found, _ = store.search_runs([exp], "params.worker = '%d'" % worker)
assert [r.info.run_id for r in found] == [run_id], found
print(run_id)
"""
N_WORKERS = 8
N_STEPS = 500


def test_eight_processes_log_to_one_experiment(store_root: Path) -> None:
    import time

    FileStore(store_root)
    start_at = time.time() + 1.5
    code = WRITER.replace("N_STEPS", str(N_STEPS))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(store_root), str(start_at), str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(N_WORKERS)
    ]
    run_ids = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        run_ids.append(out.strip())
    store = FileStore(store_root)
    shared = [e for e in store.list_experiments() if e.name == "shared"]
    assert len(shared) == 1  # created exactly once despite the race
    exp = shared[0].experiment_id
    assert store.count_runs(exp) == N_WORKERS
    for worker, run_id in enumerate(run_ids):
        history = store.get_metric_history(run_id, "loss")
        assert [m.step for m in history] == list(range(N_STEPS))  # nothing lost, nothing torn
        assert [m.value for m in history] == [worker + s / 1000 for s in range(N_STEPS)]
        assert len(store.get_metric_history(run_id, "shared/x")) == N_STEPS
        raw = (store.run_dir(run_id) / "metrics" / "loss").read_text()
        assert raw.endswith("\n") and all(len(line.split(" ")) == 3 for line in raw.splitlines())
    found, _ = store.search_runs([exp], "metrics.loss >= 0", max_results=100)
    assert sorted(r.info.run_id for r in found) == sorted(run_ids)
