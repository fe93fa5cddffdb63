"""`mlkit gc` against a real store: what goes, what never goes, and the bytes it frees."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlkit.gpu import leased_run_ids, reserve
from mlkit.gpu.select import GpuRequest
from mlkit.tracking import files
from mlkit.tracking.gc import GC_TMP_PREFIX, remove_tree, run_gc
from mlkit.tracking.lost import ownership_tags
from mlkit.tracking.registry import RegistryStore
from mlkit.tracking.retention import RetentionPolicy
from mlkit.tracking.store import FileStore

DAY_MS = 86_400_000
INDEX_PREFIX = ".mlkit-index"  # the search cache: .mlkit-index.sqlite* and the writers' .mlkit-index.journal


def du(*paths: Path) -> int:
    """Allocated bytes, as `du` counts them (the store's own index cache left out)."""
    out = subprocess.run(
        ["du", "-s", "-B1", "-c", f"--exclude={INDEX_PREFIX}*", *map(str, paths)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(out.strip().splitlines()[-1].split()[0])


def listing(*roots: Path) -> set[str]:
    """Every path under the roots (the index cache and lock files left out)."""
    found = set()
    for root in roots:
        for dirpath, dirs, names in os.walk(root):
            for name in dirs + names:
                if not name.startswith((INDEX_PREFIX, ".mlkit-experiments.lock")):
                    found.add(os.path.join(dirpath, name))
    return found


def age(path: Path, days: float) -> None:
    """Make a directory look `days` old (gc leaves young unexplained directories alone)."""
    when = time.time() - days * 86400
    os.utime(path, (when, when))


def backdate(meta_path: Path, **fields: object) -> None:
    """Rewrite times in a meta.yaml, as if the deletion happened long ago."""
    meta = files.read_yaml(meta_path)
    meta.update(fields)
    files.write_yaml_atomic(meta_path, meta)


@dataclass
class Scenario:
    store: FileStore
    ids: dict[str, str]  # role -> run id
    paths: dict[str, Path]  # role -> path of things that are not runs
    external: Path


def finished(store: FileStore, exp: str, name: str, start: int, *, loss: float, size: int = 20_000) -> str:
    run = store.create_run(exp, run_name=name, start_time=start)
    rid = run.info.run_id
    location = store.get_experiment(exp).artifact_location
    if not location.startswith(store.root.as_uri()):  # artifacts kept outside the store
        (Path(location) / rid / "artifacts").mkdir(parents=True)
    store.log_param(rid, "name", name)
    store.log_metric(rid, "val_loss", loss, step=0, timestamp=start)
    store.artifact_file(rid, "weights.bin").write_bytes(os.urandom(size))
    store.set_terminated(rid, "FINISHED", end_time=start + 60_000)
    return rid


@pytest.fixture
def scenario(store_root: Path, tmp_path: Path, sleeper, dead_pid, monkeypatch, request) -> Scenario:
    monkeypatch.setenv("MLKIT_FAKE_NVML", "four_idle")
    store = FileStore(store_root)
    now = int(time.time() * 1000)
    old = now - 400 * DAY_MS
    exp = store.create_experiment("nightly")
    ids = {}
    for i, role in enumerate(["old1", "old2", "old3"]):
        ids[role] = finished(store, exp, role, old + i * DAY_MS, loss=1.0 - i * 0.1)
    ids["registered"] = finished(store, exp, "registered", old + 3 * DAY_MS, loss=0.9)
    ids["recent"] = finished(store, exp, "recent", now - 3_600_000, loss=0.5)
    ids["deleted"] = finished(store, exp, "deleted", old + 5 * DAY_MS, loss=0.8)
    store.delete_run(ids["deleted"])
    backdate(store.run_dir(ids["deleted"]) / "meta.yaml", deleted_time=old + 10 * DAY_MS)
    ids["leased"] = finished(store, exp, "leased", old + 6 * DAY_MS, loss=0.7)
    store.delete_run(ids["leased"])  # deleted by its user, but its supervisor still holds the GPU
    backdate(store.run_dir(ids["leased"]) / "meta.yaml", deleted_time=old + 10 * DAY_MS)
    # The lease's holder must be provably that run's mlkit process: a process carrying its run id.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"],
        env={**os.environ, "MLKIT_RUN_ID": ids["leased"]},
    )
    request.addfinalizer(lambda: (holder.kill(), holder.wait()))
    reserve(GpuRequest.parse("1"), run_id=ids["leased"], owner_pid=holder.pid)
    live = store.create_run(exp, run_name="live", start_time=old, tags=ownership_tags(sleeper.pid))
    ids["live"] = live.info.run_id
    stale_tags = {"mlkit.host": socket.gethostname(), "mlkit.pid": str(dead_pid), "mlkit.pid_start": "1.0"}
    stale_tags["mlkit.heartbeat"] = str(old + 8 * DAY_MS)
    ids["stale"] = store.create_run(
        exp, run_name="stale", start_time=old + 7 * DAY_MS, tags=stale_tags
    ).info.run_id
    RegistryStore(store_root).create_model_version(
        "m", f"runs:/{ids['registered']}/model", run_id=ids["registered"]
    )

    trashed = store.create_experiment("abandoned")
    ids["trashed"] = finished(store, trashed, "trashed-run", old, loss=1.0)
    store.delete_experiment(trashed)
    backdate(store_root / ".trash" / trashed / "meta.yaml", last_update_time=old + 10 * DAY_MS)
    backdate(store.run_dir(ids["trashed"]) / "meta.yaml", deleted_time=old + 10 * DAY_MS)
    # artifacts kept outside the store (an experiment's own artifact location)
    external = tmp_path / "bucket"
    external.mkdir()
    ext = store.create_experiment("external", artifact_location=str(external))
    ids["ext_old"] = finished(store, ext, "ext-old", old, loss=1.0, size=50_000)
    ids["ext_new"] = finished(store, ext, "ext-new", now - 1000, loss=1.0)

    paths = {}
    exp_dir = store_root / exp
    paths["orphan_run"] = exp_dir / ("ab" * 16)  # a run directory whose meta.yaml is gone
    (paths["orphan_run"] / "artifacts").mkdir(parents=True)
    (paths["orphan_run"] / "artifacts" / "big.bin").write_bytes(os.urandom(30_000))
    age(paths["orphan_run"], 2)
    paths["young_orphan"] = exp_dir / ("cd" * 16)  # maybe a run being created right now: kept
    (paths["young_orphan"] / "artifacts").mkdir(parents=True)
    paths["leftover"] = exp_dir / f"{GC_TMP_PREFIX}{dead_pid}-{'ef' * 16}"  # an interrupted gc
    (paths["leftover"] / "metrics").mkdir(parents=True)
    (paths["leftover"] / "metrics" / "loss").write_text("1 0.5 0\n")
    paths["ext_orphan"] = external / ("12" * 16)  # artifacts of a run that no longer exists
    (paths["ext_orphan"] / "artifacts").mkdir(parents=True)
    (paths["ext_orphan"] / "artifacts" / "x.bin").write_bytes(os.urandom(10_000))
    age(paths["ext_orphan"], 2)
    paths["ext_not_ours"] = external / ("34" * 16)  # holds more than artifacts/: not MLflow's layout
    (paths["ext_not_ours"] / "artifacts").mkdir(parents=True)
    (paths["ext_not_ours"] / "notes.txt").write_text("someone else's")
    age(paths["ext_not_ours"], 2)
    return Scenario(store, ids, paths, external)


POLICY = RetentionPolicy(older_than=30 * 86400, keep_last=1)
GONE = {"old1", "old2", "old3", "stale", "deleted", "trashed", "ext_old"}
STAY = {"registered", "recent", "leased", "live", "ext_new"}


def test_gc_removes_exactly_what_the_rules_say_and_reports_the_bytes_freed(scenario: Scenario):
    store, ids = scenario.store, scenario.ids
    root = store.root
    assert ids["leased"] in leased_run_ids()

    before_listing = listing(root, scenario.external)
    dry = run_gc(store, POLICY, dry_run=True)
    # the stale run was marked lost first, even in a dry run
    assert dry.marked_lost == [ids["stale"]]
    stale = store.get_run(ids["stale"])
    assert stale.info.status == "FAILED" and stale.data.tags["mlkit.failure_reason"] == "lost"
    # a dry run deletes nothing (the stale run's new status is the only change: its files, and its
    # registration as a live run, docs/tracking.md "Lost runs")
    stale_dir = store.run_dir(ids["stale"])
    changed = listing(root, scenario.external) ^ before_listing
    registration = str(stale_dir.parent / ".mlkit-live" / ids["stale"])
    assert all(p.startswith(str(stale_dir) + os.sep) or p == registration for p in changed), changed

    planned = {(i.kind, i.path) for i in dry.items}
    by_run = {i.run_id: i for i in dry.items if i.kind == "run"}
    role = {run_id: name for name, run_id in ids.items()}
    assert {role[r] for r in by_run} == GONE - {"trashed"}
    assert by_run[ids["deleted"]].reason.startswith("deleted run")
    assert "not among the last 1" in by_run[ids["old1"]].reason
    experiment_items = [i for i in dry.items if i.kind == "experiment"]
    assert [i.path for i in experiment_items] == [
        str(root / ".trash" / store.get_experiment_by_name("abandoned").experiment_id)
    ]
    orphans = {i.path for i in dry.items if i.kind == "orphan"}
    assert orphans == {str(scenario.paths[k]) for k in ("orphan_run", "leftover", "ext_orphan")}
    assert by_run[ids["ext_old"]].extra_paths == [str(scenario.external / ids["ext_old"])]
    protected = {p.run_id: p.reason for p in dry.protected}
    assert set(protected) == {ids["registered"], ids["leased"]}
    assert "registered as m v1" in protected[ids["registered"]]
    assert "GPU lease" in protected[ids["leased"]]
    assert all(i.bytes > 0 for i in dry.items)

    before = du(root, scenario.external)
    real = run_gc(store, POLICY)
    after = du(root, scenario.external)
    assert not real.errors and not real.skipped
    assert {(i.kind, i.path) for i in real.items} == planned  # the dry run listed the same set
    assert all(i.removed for i in real.items)
    assert real.bytes_freed == before - after
    assert real.bytes_freed == dry.bytes_freed

    for role in GONE:
        with pytest.raises(Exception, match="does not exist"):
            store.get_run(ids[role])
    for role in STAY:
        assert store.get_run(ids[role]).info.run_id == ids[role]
    assert store.get_run(ids["live"]).info.status == "RUNNING"
    assert (scenario.external / ids["ext_new"]).is_dir()
    assert not (scenario.external / ids["ext_old"]).exists()
    assert scenario.paths["young_orphan"].is_dir() and scenario.paths["ext_not_ours"].is_dir()
    assert not any(p.name.startswith(GC_TMP_PREFIX) for p in root.rglob("*"))
    # nothing left to do: a second gc frees nothing
    again = run_gc(store, POLICY)
    assert again.items == [] and again.bytes_freed == 0


def test_keep_best_keeps_the_best_runs_by_metric(store_root: Path):
    store = FileStore(store_root)
    exp = store.create_experiment("sweep")
    start = int(time.time() * 1000) - 100 * DAY_MS
    losses = [0.9, 0.2, 0.5, 0.1, 0.7]
    ids = [
        finished(store, exp, f"r{i}", start + i * 1000, loss=loss, size=100) for i, loss in enumerate(losses)
    ]
    nan_run = finished(store, exp, "nan", start + 9000, loss=float("nan"), size=100)
    result = run_gc(store, RetentionPolicy(keep_best=2, metric="val_loss", mode="min"))
    removed = {i.run_id for i in result.items}
    assert removed == {ids[0], ids[2], ids[4], nan_run}
    assert store.get_run(ids[1]) and store.get_run(ids[3])
    result = run_gc(store, RetentionPolicy(keep_best=1, metric="val_loss", mode="max"), dry_run=True)
    assert {i.run_id for i in result.items} == {ids[3]}


def test_no_rule_removes_only_deleted_runs_and_older_than_applies_to_deletion_time(store_root: Path):
    store = FileStore(store_root)
    exp = store.create_experiment("plain")
    start = int(time.time() * 1000) - 400 * DAY_MS
    kept, gone = (finished(store, exp, n, start, loss=1.0, size=100) for n in ("kept", "gone"))
    store.delete_run(gone)
    # deleted just now: --older-than 1d does not take it yet (mlflow gc semantics)
    dry = run_gc(store, RetentionPolicy(older_than=86400), dry_run=True)
    assert gone not in {i.run_id for i in dry.items}
    assert kept in {i.run_id for i in dry.items}  # ended 400 days ago
    result = run_gc(store, RetentionPolicy())
    assert [i.run_id for i in result.items] == [gone]
    assert store.get_run(kept)


def test_interrupted_removal_leaves_no_run_that_looks_valid(store_root: Path, dead_pid: int, monkeypatch):
    store = FileStore(store_root)
    exp = store.create_experiment("crash")
    rid = finished(store, exp, "victim", 0, loss=1.0)
    run_dir = store.run_dir(rid)
    # crash right after the rename: the pid in the temp name is gone
    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(os, "getpid", lambda: dead_pid)
        patch.setattr("shutil.rmtree", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
        remove_tree(run_dir)
    assert not run_dir.exists()
    leftover = run_dir.with_name(f"{GC_TMP_PREFIX}{dead_pid}-{rid}")
    assert leftover.is_dir() and not (leftover / "meta.yaml").exists()
    fresh = FileStore(store_root)
    with pytest.raises(Exception, match="does not exist"):
        fresh.get_run(rid)
    assert rid not in {r.info.run_id for r in fresh.search_runs([exp], run_view="all")[0]}
    result = run_gc(fresh, RetentionPolicy())
    assert [i.path for i in result.items] == [str(leftover)]
    assert not leftover.exists()


def test_artifacts_shared_with_other_runs_are_left_in_place(store_root: Path, tmp_path: Path):
    store = FileStore(store_root)
    rid = finished(store, "0", "odd", 0, loss=1.0)
    shared = tmp_path / "shared-artifacts"  # e.g. a run MLflow logged with a custom artifact_uri
    (shared / "other-run-file").parent.mkdir()
    (shared / "other-run-file").write_text("keep me")
    backdate(store.run_dir(rid) / "meta.yaml", artifact_uri=shared.as_uri())
    store.delete_run(rid)
    result = run_gc(store, RetentionPolicy())
    (item,) = result.items
    assert item.run_id == rid and item.extra_paths == [] and "left in place" in item.reason
    assert (shared / "other-run-file").read_text() == "keep me"


def test_one_gc_at_a_time(store_root: Path):
    from mlkit.errors import ExitCode, LockedError
    from mlkit.tracking.gc import gc_lock

    store = FileStore(store_root)
    with gc_lock(store_root):
        with pytest.raises(LockedError, match="another `mlkit gc` is running") as info:
            run_gc(store, RetentionPolicy())
        assert info.value.exit_code == ExitCode.LOCKED
        assert run_gc(store, RetentionPolicy(), dry_run=True).items == []  # a dry run only reads
    assert run_gc(store, RetentionPolicy()).items == []


def test_policy_errors_are_usage_errors():
    from mlkit.errors import UsageError

    with pytest.raises(UsageError, match="--keep-best needs --metric"):
        RetentionPolicy(keep_best=3)
    with pytest.raises(UsageError, match="--min"):
        RetentionPolicy(keep_best=3, metric="val_loss")
    with pytest.raises(UsageError, match="--status RUNNING"):
        RetentionPolicy(keep_last=1, statuses=("RUNNING",))


def test_cli_dry_run_plain_and_json(scenario: Scenario, mlkit_cli):
    store, ids = scenario.store, scenario.ids
    plain = mlkit_cli("gc", "--older-than", "30d", "--keep-last", "1", "--dry-run")
    assert plain.returncode == 0, plain.stderr
    assert "\x1b[" not in plain.stdout + plain.stderr  # no colour codes without a terminal
    lines = plain.stdout.splitlines()
    assert lines[0].split("\t") == ["kind", "id", "name", "reason", "size", "path"]
    assert any(ids["old1"][:12] in line for line in lines)
    assert lines[-1].startswith("Dry run: 10 item(s) would be removed")
    assert "Protected" in plain.stderr and "registered as m v1" in plain.stderr
    assert store.get_run(ids["old1"])  # nothing deleted

    result = mlkit_cli("gc", "--older-than", "30d", "--keep-last", "1", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)  # exactly one JSON document
    assert doc["dry_run"] is False and doc["bytes_freed"] > 0
    assert {i["run_id"] for i in doc["items"] if i["kind"] == "run"} == {ids[r] for r in GONE - {"trashed"}}
    assert "Protected" in result.stderr

    bad = mlkit_cli("gc", "--keep-best", "3", "--metric", "val_loss")
    assert bad.returncode == 2 and "--min" in bad.stderr and bad.stdout == ""
    bad = mlkit_cli("gc", "--older-than", "30 days")
    assert bad.returncode == 2 and "not a duration" in bad.stderr
