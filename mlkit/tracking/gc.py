"""`mlkit gc`: retention rules, deleted runs and orphaned artifacts, removed safely.

One idea, planning and carrying out a store's garbage collection; the keep rules themselves are
pure and live in tracking/retention.py. What goes (each in one place, `plan_gc`):
- **retention** (only when a rule is given), per experiment, over the runs that have ended
  (FINISHED, FAILED, KILLED; `statuses` narrows that): a run is *kept* if it is among the last
  `keep_last` by start time, **or** among the best `keep_best` by `metric`, **or** it ended less
  than `older_than` ago. A run that no given rule keeps is removed. A `metric` that no run in
  scope logged (a typo would keep nothing) is `GcResult.unknown_metric`, with the nearest keys:
  shown by a dry run, refused (UsageError, nothing removed) otherwise.
- **deleted runs** (lifecycle `deleted`, and every run of an experiment in `.trash`), as
  `mlflow gc` does; with `older_than`, only those deleted longer ago than that. A trashed
  experiment whose runs all go is removed whole.
- **orphans**: run directories without a `meta.yaml`, artifact directories (in an experiment's
  own artifact location) of runs that no longer exist, leftovers of an interrupted gc, and temp
  files an interrupted write left (`.<name>.<pid>.<ns>.tmp`, untouched for a minute or written
  by a process that is gone; lost.stale_temp_files).

What never goes: a run that is still RUNNING (or SCHEDULED) after stale runs were marked lost,
a run a registered model version points at, a run holding a GPU lease.

Removal is crash-safe: a run directory is first renamed to `.mlkit-gc-<pid>-<name>` in the same
directory (one atomic rename: from then on no reader sees the run), its meta.yaml is removed, then
the tree. A crash leaves only a dot-named directory that no reader takes for a run, and that the
next gc removes. Bytes are counted as `du` does: allocated blocks, each inode once, a hard-linked
file only when every link to it goes.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mlkit import fsio
from mlkit.errors import LockedError, NotFoundError, StoreError, UsageError
from mlkit.tracking import files
from mlkit.tracking.columns import UnknownKey, keys_of, suggest
from mlkit.tracking.entities import DELETED, Experiment, Run
from mlkit.tracking.layout import TRASH
from mlkit.tracking.lost import is_owner_gone, run_temp_files, stale_temp_files, unregister_live
from mlkit.tracking.retention import ENDED_STATUSES, Candidate, RetentionPolicy, select_retention
from mlkit.units import format_duration, parse_age

GC_TMP_PREFIX = ".mlkit-gc-"
LOCK_FILE = ".mlkit-gc.lock"
ORPHAN_GRACE_S = 3600  # a run directory younger than this may be being created right now
_RUN_DIR_RE = re.compile(r"^[0-9a-f]{32}$")


def parse_duration(text: str) -> float:
    """Seconds in an --older-than age like '30d', '1d12h', '90m', '1.5h' (units w, d, h, m, s)."""
    return parse_age(text, flag="--older-than")


# ---------------------------------------------------------------------------------- results


@dataclass
class GcItem:
    """One thing gc removes (or, with --dry-run, would remove)."""

    kind: str  # "run", "experiment" (a trashed one, whole), "orphan"
    path: str
    reason: str
    bytes: int = 0  # allocated on disk, as du counts them
    apparent_bytes: int = 0  # sum of file sizes
    run_id: str | None = None
    run_name: str | None = None
    experiment_id: str | None = None
    status: str | None = None
    lifecycle_stage: str | None = None
    extra_paths: list[str] = field(default_factory=list)  # e.g. the run's artifacts stored elsewhere
    removed: bool = False
    error: str | None = None


@dataclass
class GcProtected:
    """A run that matched a removal rule but that gc never touches, and why."""

    run_id: str
    run_name: str
    experiment_id: str
    reason: str  # "running", "registered model version ...", "GPU lease"
    would_be: str  # the rule it matched


@dataclass
class GcResult:
    """What gc did (or would do)."""

    dry_run: bool
    policy: str
    items: list[GcItem]
    protected: list[GcProtected]
    kept: int  # ended runs that a keep rule kept
    marked_lost: list[str]
    bytes_freed: int  # with --dry-run: the bytes that would be freed
    apparent_bytes_freed: int
    skipped: list[str] = field(default_factory=list)  # changed since planned (e.g. now registered)
    errors: list[str] = field(default_factory=list)  # could not be removed (an OSError)
    unknown_metric: UnknownKey | None = None  # --keep-best's metric, when no run in scope logged it


# ---------------------------------------------------------------------------------- protection


def registered_run_ids(store_root: Path) -> dict[str, str]:
    """{run_id: 'model name vN'} for every model version (not deleted) in `<root>/models/`."""
    found: dict[str, str] = {}
    models = store_root / "models"
    if not models.is_dir():
        return found
    for meta_path in sorted(models.glob("*/version-*/meta.yaml")):
        try:
            meta = files.read_yaml(meta_path)
        except FileNotFoundError:
            continue
        except StoreError as exc:
            raise StoreError(
                f"{meta_path}: cannot tell which run this model version points at ({exc.message})",
                hint="fix or remove that file; gc deletes nothing until it knows which runs are registered",
            ) from exc
        if str(meta.get("current_stage", "")) == "Deleted_Internal":
            continue
        run_id = meta.get("run_id")
        source = str(meta.get("source") or "")
        if not run_id and source.startswith("runs:/"):
            run_id = source[len("runs:/") :].split("/", 1)[0]
        if run_id:
            found.setdefault(
                str(run_id), f"registered as {meta_path.parent.parent.name} v{meta.get('version', '?')}"
            )
    return found


def leased_run_ids() -> set[str]:
    """Runs holding a GPU lease now (mlkit.gpu.ledger)."""
    try:
        from mlkit.gpu import ledger  # here: only gc reads leases, and it works without mlkit.gpu
    except ModuleNotFoundError as exc:
        if exc.name in ("mlkit.gpu.ledger", "mlkit.gpu"):
            return set()  # no ledger in this build: no run can hold a lease
        raise
    return set(ledger.leased_run_ids())


def _protection(run: Run, registered: dict[str, str], leased: set[str]) -> str | None:
    reasons = []
    if run.info.status not in ENDED_STATUSES and not is_owner_gone(run.data.tags):
        # still RUNNING after mark_lost_runs: its owner is alive, or it has no mlkit owner tags
        # (logged by MLflow) and nothing tells us it ended. A deleted run is never marked lost.
        reasons.append(f"{run.info.status.lower()} (owner alive)")
    if run.info.run_id in registered:
        reasons.append(registered[run.info.run_id])
    if run.info.run_id in leased:
        reasons.append("holds a GPU lease")
    return "; ".join(reasons) or None


# ---------------------------------------------------------------------------------- sizes


def _usage(paths: list[list[Path]]) -> list[tuple[int, int]]:
    """(allocated, apparent) bytes each group of trees frees, counting each inode once.

    A file with more hard links than the groups hold is not freed. Directories always are.
    """
    inodes: dict[tuple[int, int], list[int]] = {}  # (dev, ino) -> [links seen, nlink, blocks, size, group]
    for group, roots in enumerate(paths):
        for root in roots:
            try:
                top = os.lstat(root)
            except FileNotFoundError:
                continue
            stack = [(str(root), top)]
            while stack:
                path, st = stack.pop()
                key = (st.st_dev, st.st_ino)
                seen = inodes.get(key)
                if seen is not None:
                    seen[0] += 1
                    continue
                is_dir = stat.S_ISDIR(st.st_mode)
                nlink = 1 if is_dir else st.st_nlink
                inodes[key] = [1, nlink, st.st_blocks * 512, 0 if is_dir else st.st_size, group]
                if not is_dir:
                    continue
                try:
                    entries = list(os.scandir(path))
                except OSError:
                    continue
                for entry in entries:
                    try:
                        stack.append((entry.path, entry.stat(follow_symlinks=False)))
                    except FileNotFoundError:
                        continue
    totals = [[0, 0] for _ in paths]
    for links, nlink, blocks, size, group in inodes.values():
        if links >= nlink:
            totals[group][0] += blocks
            totals[group][1] += size
    return [(a, b) for a, b in totals]


def tree_bytes(path: Path) -> int:
    """Allocated bytes of everything under `path`, each inode once (as `du -s -B1` counts)."""
    return _usage([[path]])[0][0]


# ---------------------------------------------------------------------------------- planning


@dataclass
class _PlannedRun:
    item: GcItem
    runs: list[Run]  # the runs this removes (re-checked just before removal)
    paths: list[Path]


def _all_runs(store, experiment_id: str) -> list[Run]:
    runs: list[Run] = []
    token = None
    while True:
        page, token = store.search_runs([experiment_id], max_results=1000, page_token=token, run_view="all")
        runs.extend(page)
        if not token:
            return runs


def _deleted_time(run_dir: Path) -> int | None:
    try:
        value = files.read_yaml(run_dir / "meta.yaml").get("deleted_time")
    except (FileNotFoundError, StoreError):
        return None
    return int(value) if isinstance(value, (int, float)) else None


def _external_artifacts(run: Run, run_dir: Path) -> tuple[Path | None, str | None]:
    """(the run's own artifact directory outside its run directory, or a note why it stays)."""
    path = files.path_from_uri(run.info.artifact_uri)
    if path is None or not path.is_dir():
        return None, None
    try:
        path.resolve().relative_to(run_dir.resolve())
        return None, None  # inside the run directory: goes with it
    except ValueError:
        pass
    if path.name == "artifacts" and path.parent.name == run.info.run_id:
        return path.parent, None  # MLflow's <artifact_location>/<run_id>/artifacts: the run's own dir
    if run.info.run_id in path.name:
        return path, None
    # a directory not named after the run may be shared with other runs: never remove it
    return None, f"artifacts at {path} left in place (not a directory of this run alone)"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _leftover(entry: os.DirEntry) -> bool:
    """A directory an interrupted gc left behind (its pid is gone)."""
    if not entry.name.startswith(GC_TMP_PREFIX):
        return False
    pid = entry.name[len(GC_TMP_PREFIX) :].split("-", 1)[0]
    return not (pid.isdigit() and _pid_alive(int(pid)))


def _old_enough(path: Path, now: float) -> bool:
    try:
        return now - path.stat().st_mtime > ORPHAN_GRACE_S
    except FileNotFoundError:
        return False


def _orphan_run_dir(path: Path, now: float) -> bool:
    """A run directory without a meta.yaml, untouched for the grace period. False when that cannot
    be told (a directory another user keeps to themselves): gc leaves what it cannot read alone."""
    try:
        return (
            not (path / "meta.yaml").exists()
            and any((path / sub).is_dir() for sub in ("artifacts", "metrics", "params"))
            and _old_enough(path, now)
        )
    except OSError:
        return False


def _scan_orphans(exp_dir: Path, experiment_id: str, known: set[str], now: float) -> list[GcItem]:
    items: list[GcItem] = []
    try:
        entries = list(os.scandir(exp_dir))
    except FileNotFoundError:
        return items
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False):
            continue
        path = Path(entry.path)
        if _leftover(entry):
            items.append(
                GcItem("orphan", str(path), "left over from an interrupted gc", experiment_id=experiment_id)
            )
        elif _RUN_DIR_RE.match(entry.name) and entry.name not in known and _orphan_run_dir(path, now):
            items.append(
                GcItem(
                    "orphan",
                    str(path),
                    "run directory without meta.yaml (its run no longer exists)",
                    run_id=entry.name,
                    experiment_id=experiment_id,
                )
            )
    return items


def _select_experiments(store, refs: list[str] | None) -> tuple[list, list]:
    everything = store.list_experiments(view="all")
    if not refs:
        return everything, everything
    chosen: list[Experiment] = []
    for ref in refs:
        match = [e for e in everything if e.experiment_id == ref or e.name == ref]
        if not match:
            raise NotFoundError(
                f"--experiment {ref!r}: no such experiment (active or deleted)",
                hint="see `mlkit experiments list`",
            )
        chosen.extend(m for m in match if m not in chosen)
    return everything, chosen


# One pass over the experiments in scope, applying every rule (deleted runs, retention, orphans)
# to each run once against shared state (what is planned, protected, kept): the rules read in the
# order gc applies them, and splitting them would thread that state through every step.
def plan_gc(  # noqa: C901
    store,
    policy: RetentionPolicy,
    *,
    experiments: list[str] | None = None,
    deleted: bool = True,
    orphans: bool = True,
    now_ms: int | None = None,
) -> tuple[GcResult, list[_PlannedRun]]:
    """Decide what gc removes; changes nothing but marking stale RUNNING runs lost."""
    marked_lost = list(store.mark_lost_runs(whole=True))  # every run, registered live or not
    now_ms = now_ms if now_ms is not None else files.now_ms()
    everything, chosen = _select_experiments(store, experiments)
    registered = registered_run_ids(store.root)
    leased = leased_run_ids()
    runs_by_exp = {exp.experiment_id: _all_runs(store, exp.experiment_id) for exp in everything}
    known_ids = {r.info.run_id for runs in runs_by_exp.values() for r in runs}
    planned: list[_PlannedRun] = []
    protected: list[GcProtected] = []
    orphan_items: list[GcItem] = []
    kept = 0
    in_scope: list[Run] = []  # the ended runs the retention rules judge

    def plan(run: Run, reason: str) -> bool:
        """Plan removing `run`; False when it is protected."""
        guard = _protection(run, registered, leased)
        if guard:
            protected.append(
                GcProtected(run.info.run_id, run.info.run_name, run.info.experiment_id, guard, reason)
            )
            return False
        run_dir = store.run_dir(run.info.run_id)
        item = GcItem(
            "run",
            str(run_dir),
            reason,
            run_id=run.info.run_id,
            run_name=run.info.run_name,
            experiment_id=run.info.experiment_id,
            status=run.info.status,
            lifecycle_stage=run.info.lifecycle_stage,
        )
        paths = [run_dir]
        external, note = _external_artifacts(run, run_dir)
        if external is not None:
            paths.append(external)
            item.extra_paths.append(str(external))
        if note:
            item.reason += f"; {note}"
        planned.append(_PlannedRun(item, [run], paths))
        return True

    for exp in chosen:
        in_trash = exp.lifecycle_stage == DELETED
        exp_dir = store.root / (TRASH if in_trash else "") / exp.experiment_id
        if in_trash and not deleted:
            continue
        first = len(planned)
        all_go = True  # every run of a trashed experiment goes: remove the experiment whole
        candidates: list[Candidate] = []
        by_id: dict[str, Run] = {}
        for run in runs_by_exp[exp.experiment_id]:
            if in_trash or run.info.lifecycle_stage == DELETED:
                if not deleted:
                    continue
                when = _deleted_time(store.run_dir(run.info.run_id)) or (
                    exp.last_update_time if in_trash else None
                )
                if policy.older_than is not None and when and now_ms - when < policy.older_than * 1000:
                    all_go = False
                    continue
                why = "in a deleted experiment" if in_trash else "deleted run"
                if when:
                    why += f" (deleted {format_duration(max(0, now_ms - when) / 1000)} ago)"
                all_go = plan(run, why) and all_go
            elif policy.active and run.info.status in policy.statuses:
                metric = run.data.metrics.get(policy.metric) if policy.metric else None
                candidates.append(Candidate(run.info.run_id, run.info.start_time, run.info.end_time, metric))
                by_id[run.info.run_id] = run
                in_scope.append(run)
        removed, kept_ids = select_retention(candidates, policy, now_ms)
        kept += len(kept_ids)
        for run_id, why in removed.items():
            plan(by_id[run_id], why)
        updated = exp.last_update_time
        if (
            in_trash
            and all_go
            and (policy.older_than is None or (updated and now_ms - updated >= policy.older_than * 1000))
        ):
            runs_planned = planned[first:]
            del planned[first:]
            item = GcItem(
                "experiment",
                str(exp_dir),
                f"deleted experiment {exp.name!r} ({len(runs_planned)} runs)",
                experiment_id=exp.experiment_id,
                lifecycle_stage=DELETED,
            )
            paths = [exp_dir] + [path for rp in runs_planned for path in rp.paths[1:]]
            item.extra_paths = [str(path) for path in paths[1:]]
            planned.append(_PlannedRun(item, [r for rp in runs_planned for r in rp.runs], paths))
            if orphans:
                orphan_items += _scan_artifact_location(exp, exp_dir, known_ids, now_ms / 1000)
        elif orphans:
            orphan_items += _scan_orphans(exp_dir, exp.experiment_id, known_ids, now_ms / 1000)
            orphan_items += _scan_artifact_location(exp, exp_dir, known_ids, now_ms / 1000)
        if orphans:
            orphan_items += _scan_temp_files(store, exp_dir, exp.experiment_id, planned[first:])
    if orphans and not experiments:
        orphan_items += _scan_root_leftovers(store.root)
        orphan_items += [GcItem("orphan", str(p), TEMP_REASON) for p in stale_temp_files(store.root)]
    planned += [_PlannedRun(item, [], [Path(item.path)]) for item in orphan_items]
    for p, (allocated, apparent) in zip(planned, _usage([p.paths for p in planned]), strict=True):
        p.item.bytes, p.item.apparent_bytes = allocated, apparent
    result = GcResult(
        dry_run=True,
        policy=policy.describe(),
        items=[p.item for p in planned],
        protected=protected,
        kept=kept,
        marked_lost=marked_lost,
        bytes_freed=sum(p.item.bytes for p in planned),
        apparent_bytes_freed=sum(p.item.apparent_bytes for p in planned),
        unknown_metric=_unknown_metric(policy, in_scope),
    )
    return result, planned


def _unknown_metric(policy: RetentionPolicy, runs: list[Run]) -> UnknownKey | None:
    """--keep-best's metric when runs are judged but none of them logged it (else None)."""
    if policy.keep_best is None or not policy.metric or not runs:
        return None
    if any(policy.metric in run.data.metrics for run in runs):
        return None
    keys = keys_of(runs)
    return UnknownKey("--metric", f"metrics.{policy.metric}", suggest(policy.metric, keys))


def _scan_artifact_location(exp, exp_dir: Path, known: set[str], now: float) -> list[GcItem]:
    """Artifact dirs `<artifact_location>/<run_id>/artifacts` of runs that no longer exist.

    Only directories named like a run id (32 hex), holding nothing but `artifacts/`, older than an
    hour, whose id no run of this store has. The location is assumed to belong to this store.
    """
    location = files.path_from_uri(exp.artifact_location)
    if location is None or not location.is_dir():
        return []
    try:
        if location.resolve() == exp_dir.resolve():
            return []  # the default layout: covered by _scan_orphans
    except OSError:
        return []
    items = []
    for entry in os.scandir(location):
        path = Path(entry.path)
        if not entry.is_dir(follow_symlinks=False):
            continue
        if _leftover(entry):
            items.append(
                GcItem(
                    "orphan", str(path), "left over from an interrupted gc", experiment_id=exp.experiment_id
                )
            )
        elif (
            _RUN_DIR_RE.match(entry.name)
            and entry.name not in known
            and _only_artifacts(path)
            and _old_enough(path, now)
        ):
            items.append(
                GcItem(
                    "orphan",
                    str(path),
                    "artifacts of a run that no longer exists",
                    run_id=entry.name,
                    experiment_id=exp.experiment_id,
                )
            )
    return items


TEMP_REASON = "temp file left by an interrupted write"


def _scan_temp_files(store, exp_dir: Path, experiment_id: str, going: list[_PlannedRun]) -> list[GcItem]:
    """Leftover temp files in an experiment (its directory, its tags) and in its runs that stay
    (a run that goes takes its temp files with it)."""
    gone = {str(path) for p in going for path in p.paths}
    if str(exp_dir) in gone:
        return []
    paths = stale_temp_files(exp_dir) + stale_temp_files(exp_dir / "tags", recursive=True)
    for run_dir in store.run_dirs_of(exp_dir):
        if str(run_dir) not in gone:
            paths += run_temp_files(run_dir)
    return [GcItem("orphan", str(path), TEMP_REASON, experiment_id=experiment_id) for path in paths]


def _only_artifacts(path: Path) -> bool:
    """True when `path` holds nothing but an `artifacts/` directory (MLflow's per-run layout)."""
    try:
        entries = list(os.scandir(path))
    except OSError:
        return False
    return len(entries) == 1 and entries[0].name == "artifacts" and entries[0].is_dir(follow_symlinks=False)


def _scan_root_leftovers(root: Path) -> list[GcItem]:
    items = []
    for base in (root, root / ".trash"):
        try:
            entries = list(os.scandir(base))
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False) and _leftover(entry):
                items.append(GcItem("orphan", entry.path, "left over from an interrupted gc"))
    return items


# ---------------------------------------------------------------------------------- removal


def remove_tree(path: Path) -> bool:
    """Remove a run/experiment/artifact directory so that a crash never leaves a half that looks valid.

    Rename it to a dot-named temp directory beside it (atomic; readers skip dot names), remove
    its meta.yaml, then the rest. False when it was already gone (another gc took it).
    """
    if not path.is_dir() or path.is_symlink():  # a leftover temp file
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True
    if path.name.startswith(GC_TMP_PREFIX):
        tmp = path
        if not os.path.lexists(tmp):
            return False
    else:
        tmp = path.with_name(f"{GC_TMP_PREFIX}{os.getpid()}-{path.name}")
        try:
            os.rename(path, tmp)
        except FileNotFoundError:
            return False
    try:
        (tmp / "meta.yaml").unlink()
    except (FileNotFoundError, NotADirectoryError):
        pass

    def ignore_missing(_func, _path, exc_info) -> None:
        if not isinstance(exc_info[1], FileNotFoundError):
            raise exc_info[1]

    shutil.rmtree(tmp, onerror=ignore_missing)
    return True


@contextmanager
def gc_lock(root: Path) -> Iterator[None]:
    """One gc at a time per store: an flock on `<root>/.mlkit-gc.lock` (a file, so MLflow ignores
    it), taken without waiting: a second gc fails at once (LockedError) naming the first."""
    fd = fsio.open_file(root / LOCK_FILE, write=True, create=True, mode=0o644, other_owners=True)
    try:
        if not fsio.try_lock(fd):
            holder = fsio.lock_holder(fd) or "another process"
            raise LockedError(
                f"{root}: another `mlkit gc` is running on this store ({holder})",
                hint="wait for it to finish (cron: stagger the gc jobs)",
            )
        yield
    finally:
        os.close(fd)


def _still_removable(store, planned: _PlannedRun, registered: dict[str, str], leased: set[str]) -> str | None:
    """Re-check the planned runs just before removing them: None if fine, else why not."""
    for before in planned.runs:
        try:
            run = store.get_run(before.info.run_id)
        except Exception as exc:  # vanished or unreadable: leave it alone
            return f"cannot re-read run {before.info.run_id}: {exc}"
        guard = _protection(run, registered, leased)
        if guard:
            return f"run {run.info.run_id}: {guard}"
        if (run.info.lifecycle_stage, run.info.status) != (before.info.lifecycle_stage, before.info.status):
            return f"run {run.info.run_id} changed to {run.info.status}/{run.info.lifecycle_stage}"
    return None


def run_gc(
    store,
    policy: RetentionPolicy,
    *,
    experiments: list[str] | None = None,
    deleted: bool = True,
    orphans: bool = True,
    dry_run: bool = False,
    now_ms: int | None = None,
) -> GcResult:
    """Plan, then (unless `dry_run`) remove. Bytes freed are those of the items removed."""
    if dry_run:
        return plan_gc(
            store, policy, experiments=experiments, deleted=deleted, orphans=orphans, now_ms=now_ms
        )[0]
    with gc_lock(store.root):
        result, planned = plan_gc(
            store, policy, experiments=experiments, deleted=deleted, orphans=orphans, now_ms=now_ms
        )
        if result.unknown_metric is not None:  # a typo would keep no run by the metric
            raise UsageError(
                f"{result.unknown_metric} (--keep-best would keep no run by it); nothing was removed",
                hint="fix the metric name (see `mlkit runs show RUN`); --dry-run shows what would go",
            )
        _remove(store, result, planned)
    return result


def _remove(store, result: GcResult, planned: list[_PlannedRun]) -> None:
    result.dry_run = False
    registered = registered_run_ids(store.root)
    leased = leased_run_ids()
    for p in planned:
        blocker = _still_removable(store, p, registered, leased)
        if blocker:
            p.item.error = f"skipped: {blocker}"
            result.skipped.append(f"{p.item.path}: {blocker}")
            continue
        try:
            removed = [remove_tree(path) for path in p.paths]
        except OSError as exc:
            p.item.error = str(exc)
            result.errors.append(f"{p.item.path}: {exc}")
            continue
        if removed[0]:
            p.item.removed = True
            if p.item.kind == "run":  # its live-run registration (if an MLflow client ended it) goes too
                unregister_live(p.paths[0])
        else:
            p.item.error = "skipped: already gone"
            result.skipped.append(f"{p.item.path}: already gone (removed by another process)")
    result.bytes_freed = sum(p.item.bytes for p in planned if p.item.removed)
    result.apparent_bytes_freed = sum(p.item.apparent_bytes for p in planned if p.item.removed)
