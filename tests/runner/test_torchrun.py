"""Multi-process hand-off to torchrun on CPU (gloo): one run, rank 0 logs, the tree dies together."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import psutil
import pytest

pytest.importorskip("torch")
pytestmark = [pytest.mark.torch, pytest.mark.slow]

DDP = {
    "MLproject": """
        entry_points:
          main:
            parameters: {hang: {type: int, default: 0}}
            command: "python ddp.py --hang {hang}"
    """,
    "ddp.py": """
        import os, sys, time
        import torch
        import torch.distributed as dist
        import mlkit

        dist.init_process_group("gloo")
        rank = dist.get_rank()
        t = torch.ones(1) * (rank + 1)
        dist.all_reduce(t)
        # One write per line: with PYTHONUNBUFFERED, print() writes the text and the newline
        # apart, and the two ranks share the pipe, so their lines could interleave.
        print(f"rank {rank} pid {os.getpid()} run {os.environ['MLKIT_RUN_ID']} sum {t.item():g}\\n", end="", flush=True)
        if rank == 0:
            mlkit.log_metric("sum", t.item())
        if sys.argv[-1] == "1":
            print(f"rank {rank} hanging\\n", end="", flush=True)
            time.sleep(120)
        dist.destroy_process_group()
    """,
}
ENV = {"OMP_NUM_THREADS": "1", "MLKIT_KILL_GRACE": "3"}


def test_two_ranks_one_run_metric_written_once(make_project, mlkit_run, only_run, store_root):
    project = make_project(DDP)
    result = mlkit_run(str(project), "--nproc-per-node", "2", env=ENV, timeout=120)
    assert result.returncode == 0, result.stderr
    run = only_run()  # exactly one run for the whole launch
    assert run.info.status == "FINISHED"
    assert json.loads(run.data.tags["mlkit.command"])[1:3] == ["-m", "torch.distributed.run"]
    metric = Path(store_root, "0", run.info.run_id, "metrics", "sum").read_text().splitlines()
    assert len(metric) == 1 and metric[0].split()[1] == "3.0"  # rank 0 only, after the all_reduce
    log = Path(store_root, "0", run.info.run_id, "artifacts", "logs", "output.log").read_text()
    for rank in (0, 1):
        assert f"rank {rank} pid" in log and f"run {run.info.run_id} sum 3" in log


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_kills_every_rank(sig, make_project, start_mlkit, only_run, store_root, wait_for):
    project = make_project(DDP)
    sup = start_mlkit(str(project), "--nproc-per-node", "2", "-P", "hang=1", env=ENV)

    def both_hanging() -> bool:
        logs = list(Path(store_root).glob("0/*/artifacts/logs/output.log"))
        text = logs[0].read_text() if logs else ""
        return "rank 0 hanging" in text and "rank 1 hanging" in text

    wait_for(both_hanging, timeout=90, what="both ranks to start")
    log = next(Path(store_root).glob("0/*/artifacts/logs/output.log")).read_text()
    pids = [int(line.split()[3]) for line in log.splitlines() if line.startswith("rank ") and " pid " in line]
    assert len(pids) == 2
    sup.send_signal(sig)
    assert sup.wait(timeout=60) == 128 + sig
    for pid in pids:  # the ranks live in their own sessions (torchrun's doing); they still died
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert only_run().info.status == "KILLED"


@pytest.mark.parametrize(
    ("scenario", "gpus_tagged"), [("four_idle", 2), ("one_busy_foreign", 0)], ids=["two-free", "one-free"]
)
def test_auto_gives_each_rank_a_gpu_or_runs_all_ranks_on_cpu(
    make_project, mlkit_run, only_run, scenario, gpus_tagged
):
    """--nproc-per-node 2 under --gpus auto: two leased GPUs, or (only one free) CPU ranks with a notice."""
    project = make_project(DDP)
    result = mlkit_run(
        "--env-manager", "local", "--system-metrics-interval", "0", str(project), "--nproc-per-node", "2",
        fast=False, env={**ENV, "MLKIT_FAKE_NVML": scenario},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    tags = only_run().data.tags
    assert len([u for u in tags.get("mlkit.gpu.uuids", "").split(",") if u]) == gpus_tagged
    if not gpus_tagged:
        assert "1 of the 2 GPUs needed free (" in result.stderr and "running on CPU" in result.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_nodes_share_one_scheduled_run(make_project, start_mlkit, store_root, wait_for):
    """What a Slurm job with --nodes 2 starts on each node: `--run-id RUN --nnodes 2 --node-rank R`.
    Here both "nodes" are this host; node 0 records the run, node 1 only runs its share."""
    from mlkit.tracking.store import FileStore

    project = make_project(DDP)
    run_id = FileStore(store_root).create_run("0", status="SCHEDULED").info.run_id
    common = ["--run-id", run_id, "--nnodes", "2", "--rdzv-endpoint", f"127.0.0.1:{_free_port()}"]
    nodes = [start_mlkit(str(project), *common, "--node-rank", str(rank), env=ENV) for rank in (0, 1)]
    for node in nodes:
        assert node.wait(timeout=120) == 0
    runs, _ = FileStore(store_root).search_runs(["0"])
    assert [r.info.run_id for r in runs] == [run_id]
    run = runs[0]
    assert run.info.status == "FINISHED" and "mlkit.failed_node" not in run.data.tags
    assert run.data.tags["mlkit.pid"] == str(nodes[0].pid)  # node 0's supervisor owns the run
    metric = Path(store_root, "0", run_id, "metrics", "sum").read_text().splitlines()
    assert len(metric) == 1 and metric[0].split()[1] == "3.0"  # rank 0 only
    assert not any(p.name.startswith("system") for p in Path(store_root, "0", run_id, "metrics").iterdir())
    # c10d hands out global ranks in join order: each node's log holds one rank, never both
    logs = Path(store_root, "0", run_id, "artifacts", "logs")
    node0, node1 = (logs / "output.log").read_text(), (logs / "output-node1.log").read_text()
    assert {("rank 0 pid" in node0), ("rank 0 pid" in node1)} == {True, False}
    assert {("rank 1 pid" in node0), ("rank 1 pid" in node1)} == {True, False}
