"""The tracking store: MLflow's FileStore layout on disk, written safely and read fast.

Layout, byte for byte as MLflow writes it (docs/tracking.md, mlflow-compat.md section 4):
`<root>/<experiment_id>/meta.yaml`, `<root>/<experiment_id>/<run_id>/{meta.yaml, metrics/,
params/, tags/, artifacts/}`, deleted experiments under `<root>/.trash/`.

The module is one class, FileStore (one idea: reading and writing that layout), so it is longer
than most. It is the only module that touches its private state; what the modules beside it need
is public: `run_index()` (the search cache it owns), `experiment_dirs()`, `experiment_dir()`,
`run_dirs_of()`. It imports them one way (docs/internals.md, tests/tracking/test_import_graph.py).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import getpass
import os
import posixpath
import stat
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlkit import fsio, settings
from mlkit.errors import InvalidInputError, MlkitError, NotFoundError, StoreError
from mlkit.tracking import files
from mlkit.tracking.entities import (
    ACTIVE,
    DELETED,
    FAILED,
    INT_TO_STATUS,
    RUNNING,
    SCHEDULED,
    STATUS_TO_INT,
    Experiment,
    FileInfo,
    Metric,
    Run,
    RunData,
    RunInfo,
)
from mlkit.tracking.layout import DEFAULT_EXPERIMENT_ID, RESERVED_EXPERIMENT_DIRS, RESERVED_ROOT_DIRS, TRASH
from mlkit.tracking.lost import (
    ATTACH_LOCK,
    FAILURE_REASON_TAG,
    HEARTBEAT_TAG,
    PID_TAG,
    is_owner_gone,
    lost_runs,
    register_live,
    remove_temp_files,
    run_temp_files,
    unregister_live,
)
from mlkit.tracking.names import random_below, random_run_name
from mlkit.tracking.runsummary import KINDS, record
from mlkit.tracking.validation import (
    key_collision,
    param_value,
    validate_artifact_path,
    validate_experiment_id,
    validate_experiment_name,
    validate_key,
    validate_keys,
    validate_run_id,
)

if TYPE_CHECKING:
    from mlkit.tracking.index import RunIndex

LOCK_FILE = ".mlkit-experiments.lock"
MAX_OPEN_METRIC_FILES = 256
EXPERIMENT_LOCK_WAIT_S = 60.0  # creating an experiment takes moments: longer is a stuck holder
STATUS_RETRY_DELAYS_S = (0.05, 0.2, 0.5)  # a terminal status on a full disk: retries, then in place
RUN_NAME_TAG = "mlflow.runName"
USER_TAG = "mlflow.user"

_OPEN_STORES: weakref.WeakSet[FileStore] = weakref.WeakSet()


def _close_all_stores() -> None:
    for store in list(_OPEN_STORES):
        store.close()


atexit.register(_close_all_stores)


def _uuid4() -> bytes:
    """The 16 bytes of `uuid.uuid4()`, without importing uuid (which imports `platform`: a few ms
    of every `mlkit run`): random bytes with the version-4 and RFC 4122 variant bits set."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40
    raw[8] = raw[8] & 0x3F | 0x80
    return bytes(raw)


def _new_experiment_id() -> str:
    """MLflow's FileStore id: last 18 digits of a uuid4 int, leading zeros replaced at random."""
    digits = str(int.from_bytes(_uuid4(), "big"))[-18:]
    stripped = digits.lstrip("0")
    return "".join(str(1 + random_below(9)) for _ in range(len(digits) - len(stripped))) + stripped


def _disk_full(error: MlkitError) -> bool:
    return "disk is full" in str(error)


def _collision_below(base: Path, key: str, kind: str) -> InvalidInputError:
    """`base/key` is a directory (of keys `key/...`): name one of them in the error."""
    other = f"{key}/..."
    with contextlib.suppress(OSError, StopIteration):
        dirpath, _dirs, names = next((d, s, n) for d, s, n in os.walk(base / key) if n)
        other = os.path.relpath(os.path.join(dirpath, names[0]), base)
    return key_collision(kind, key, other)


def _check_key_paths(base: Path, keys: Any, kind: str) -> None:
    """Refuse keys that collide with files already there: 'a/b' when the file 'a' exists, or 'a'
    when the directory 'a/' (of keys 'a/...') does. Stat calls only; nothing is written."""
    for key in keys:
        parts = key.split("/")
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            if os.path.isfile(base / prefix):
                raise key_collision(kind, key, prefix)
        if os.path.isdir(base / key):
            raise _collision_below(base, key, kind)


def _key_path(base: Path, key: str, kind: str) -> Path:
    """The file of `key` under `base` with its directories made; a collision with another key
    (a file where a directory is needed) is an InvalidInputError."""
    path = base / key
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        _check_key_paths(base, [key], kind)
        raise
    except OSError as exc:
        raise fsio.write_error(path, exc) from exc
    if os.path.isdir(path):
        raise _collision_below(base, key, kind)
    return path


def _artifact_link(path: Path, base: Path) -> InvalidInputError:
    return InvalidInputError(
        f"artifact path {path} is a symbolic link (or not a directory); mlkit never writes through "
        f"links in a run's artifacts, so nothing can land outside {base}",
        hint=f"remove the link {path}, or log under another artifact path",
    )


def _current_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in a container
        return "unknown"


def experiment_dir(root: Path, experiment_id: str) -> Path:
    """The directory of an experiment of the store at `root`, active or in the trash; NotFoundError
    when neither. Reads only: `mlkit run --experiment-id` and `sweep start` ask it before they
    create a store (a new one holds only Default, "0"), so a wrong id leaves nothing behind."""
    experiment_id = validate_experiment_id(experiment_id)
    for path in (root / experiment_id, root / TRASH / experiment_id):
        if (path / "meta.yaml").is_file():
            return path
    raise NotFoundError(
        f"experiment {experiment_id!r} does not exist in {root}", hint="see `mlkit experiments list`"
    )


class FileStore:
    """A tracking store rooted at a directory (MLflow's FileStore layout)."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root: Path = settings.tracking_root(root)
        self._run_dirs: dict[str, Path] = {}  # run_id -> run directory (found once, then cached)
        self._metric_fds: dict[tuple[str, str], int] = {}  # (run_id, key) -> O_APPEND fd
        self._fd_lock = threading.RLock()
        self._index: RunIndex | None = None  # the search cache, opened by run_index() on first use
        self._init_root()
        _OPEN_STORES.add(self)

    # ------------------------------------------------------------------ root and experiments
    def _init_root(self) -> None:
        """Make the store usable: a new store gets its Default experiment `0/`, whole.

        `0/` is built completely (meta.yaml included) in a hidden temp directory and renamed into
        place, so it either does not exist or is whole; of several processes creating a store at
        once, the first rename wins and the others drop theirs. Nothing else marks a store as
        initialised: `0/meta.yaml` exists or it does not.
        """
        root = self.root
        if not (root / DEFAULT_EXPERIMENT_ID / "meta.yaml").is_file():
            if root.exists() and not root.is_dir():
                raise StoreError(
                    f"{root}: the tracking store path exists but is not a directory",
                    hint="pass --store or set MLKIT_TRACKING_URI to a directory",
                )
            try:
                root.mkdir(parents=True, exist_ok=True)
                names = os.listdir(root)
            except OSError as exc:
                raise StoreError(
                    f"{root}: cannot create the tracking store: {exc.strerror or exc}",
                    hint="pass --store or set MLKIT_TRACKING_URI to a writable directory",
                ) from exc
            if DEFAULT_EXPERIMENT_ID not in names and all(n.startswith(".") for n in names):
                self._publish_experiment(DEFAULT_EXPERIMENT_ID, "Default", None, None, exist_ok=True)
        with contextlib.suppress(OSError):  # a read-only store is still readable
            (root / TRASH).mkdir(exist_ok=True)

    @contextmanager
    def _experiment_lock(self) -> Iterator[None]:
        """Hold the store's experiment lock (flock with a deadline that names the holder)."""
        with fsio.locked(
            self.root / LOCK_FILE,
            wait=EXPERIMENT_LOCK_WAIT_S,
            what=f"the experiment lock of {self.root}",
            hint="creating an experiment takes moments: check what the holder is doing, then retry",
            mode=0o664,
            other_owners=True,
        ):
            yield

    def experiment_dir(self, experiment_id: str) -> Path:
        """The directory of an experiment, active or in the trash; NotFoundError when neither."""
        return experiment_dir(self.root, experiment_id)

    def experiment_dirs(self, view: str = "active") -> list[Path]:
        """The experiment directories of a view: 'active' (the root), 'deleted' (the trash), 'all'."""
        dirs: list[Path] = []
        roots = []
        if view in ("active", "all"):
            roots.append((self.root, RESERVED_ROOT_DIRS))
        if view in ("deleted", "all"):
            roots.append((self.root / TRASH, frozenset()))
        for base, skip in roots:
            try:
                entries = list(os.scandir(base))
            except FileNotFoundError:
                continue
            for entry in entries:
                if entry.name in skip or entry.name.startswith(".") or not entry.is_dir():
                    continue
                dirs.append(Path(entry.path))
        return dirs

    def _read_experiment(self, exp_dir: Path) -> Experiment:
        meta = files.read_yaml(exp_dir / "meta.yaml")
        experiment_id = str(meta.get("experiment_id", exp_dir.name))
        location = str(meta.get("artifact_location") or "")
        stored = files.path_from_uri(location)
        if stored is None or not stored.exists():
            if exp_dir.exists():  # the store was moved: resolve next to the data
                location = files.path_to_uri(exp_dir)
        return Experiment(
            experiment_id=experiment_id,
            name=str(meta.get("name", "")),
            artifact_location=location,
            lifecycle_stage=str(meta.get("lifecycle_stage", ACTIVE)),
            creation_time=meta.get("creation_time"),
            last_update_time=meta.get("last_update_time"),
            tags=files.read_value_dir(exp_dir / "tags"),
        )

    def list_experiments(self, view: str = "active") -> list[Experiment]:
        """Experiments in the store; view is 'active', 'deleted' or 'all'."""
        if view not in ("active", "deleted", "all"):
            raise InvalidInputError(
                f"invalid experiment view {view!r}", hint="use 'active', 'deleted' or 'all'"
            )
        experiments = []
        for exp_dir in self.experiment_dirs(view):
            try:
                exp = self._read_experiment(exp_dir)
            except (FileNotFoundError, StoreError):
                continue  # MLflow skips malformed experiments too
            if exp.experiment_id != exp_dir.name:
                continue
            experiments.append(exp)
        experiments.sort(key=lambda e: (-(e.creation_time or 0), e.experiment_id))
        return experiments

    def get_experiment(self, experiment_id: str) -> Experiment:
        """The experiment with this id; NotFoundError when there is none."""
        return self._read_experiment(self.experiment_dir(str(experiment_id)))

    def get_experiment_by_name(self, name: str) -> Experiment | None:
        """The experiment (active or deleted) with this name, or None."""
        for exp in self.list_experiments("all"):
            if exp.name == name:
                return exp
        return None

    def _publish_experiment(
        self,
        experiment_id: str,
        name: str,
        artifact_location: str | None,
        tags: dict[str, Any] | None,
        *,
        exist_ok: bool = False,
    ) -> None:
        """Create experiment directory `<root>/<id>` whole: built in a hidden temp directory
        (meta.yaml, tags) and renamed into place. With `exist_ok`, losing the race to another
        process that created it first is fine."""
        exp_dir = self.root / experiment_id
        if artifact_location:
            local = files.path_from_uri(artifact_location)
            if local is not None and not local.is_absolute():
                artifact_location = files.path_to_uri(local.resolve())
        now = files.now_ms()
        meta = {
            "artifact_location": artifact_location or files.path_to_uri(exp_dir),
            "creation_time": now,
            "experiment_id": experiment_id,
            "last_update_time": now,
            "lifecycle_stage": ACTIVE,
            "name": name,
        }
        checked = {k: str(v) for k, v in (tags or {}).items()}
        validate_keys(list(checked), "experiment tag")
        staging = fsio.temp_name(exp_dir)
        try:
            try:
                staging.mkdir()
                for key, value in checked.items():
                    self._write_tag_file(staging / "tags", key, value, "experiment tag")
                files.write_yaml_atomic(staging / "meta.yaml", meta)
                os.rename(staging, exp_dir)
            except OSError as exc:
                if exist_ok and exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    return  # another process made it first: theirs is whole too
                raise fsio.write_error(exp_dir, exc) from exc
        finally:
            if staging.exists():
                import shutil  # import budget: shutil (bz2, lzma) loads only to clean up

                shutil.rmtree(staging, ignore_errors=True)

    def create_experiment(
        self, name: str, artifact_location: str | None = None, tags: dict[str, Any] | None = None
    ) -> str:
        """Create an experiment; InvalidInputError if the name is taken (active or deleted)."""
        validate_experiment_name(name)
        validate_keys([str(k) for k in (tags or {})], "experiment tag")
        with self._experiment_lock():
            return self._create_experiment_locked(name, artifact_location, tags)

    def _create_experiment_locked(
        self, name: str, artifact_location: str | None, tags: dict[str, Any] | None
    ) -> str:
        existing = self.get_experiment_by_name(name)
        if existing is not None:
            state = " in deleted state" if existing.lifecycle_stage == DELETED else ""
            raise InvalidInputError(
                f"experiment {name!r} already exists{state} (id {existing.experiment_id})",
                hint="pick another name"
                + (", or restore it with `mlkit experiments restore`" if state else ""),
            )
        while True:
            experiment_id = _new_experiment_id()
            if not (self.root / experiment_id).exists() and not (self.root / TRASH / experiment_id).exists():
                break
        self._publish_experiment(experiment_id, name, artifact_location, tags)
        return experiment_id

    def get_or_create_experiment(self, name: str) -> str:
        """The id of the active experiment with this name, created if missing (under a file lock)."""
        validate_experiment_name(name)
        existing = self.get_experiment_by_name(name)
        if existing is not None and existing.lifecycle_stage == ACTIVE:
            return existing.experiment_id
        with self._experiment_lock():
            existing = self.get_experiment_by_name(name)
            if existing is not None:
                if existing.lifecycle_stage == ACTIVE:
                    return existing.experiment_id
                raise InvalidInputError(
                    f"experiment {name!r} exists in deleted state (id {existing.experiment_id})",
                    hint="restore it with `mlkit experiments restore` or pick another name",
                )
            return self._create_experiment_locked(name, None, None)

    def set_experiment_tag(self, experiment_id: str, key: str, value: Any) -> None:
        """Set a tag on an experiment."""
        validate_key(key, "experiment tag")
        exp_dir = self.experiment_dir(str(experiment_id))
        self._write_tag_file(exp_dir / "tags", key, str(value), "experiment tag")

    def delete_experiment(self, experiment_id: str) -> None:
        """Mark an experiment and its active runs deleted and move it to .trash (not '0')."""
        experiment_id = str(experiment_id)
        if experiment_id == DEFAULT_EXPERIMENT_ID:
            raise InvalidInputError(
                "the Default experiment (id 0) cannot be deleted", hint="delete its runs instead"
            )
        exp_dir = self.experiment_dir(experiment_id)
        if exp_dir.parent.name == TRASH:
            raise InvalidInputError(f"experiment {experiment_id} is already deleted", hint="restore it first")
        now = files.now_ms()
        meta = files.read_yaml(exp_dir / "meta.yaml")
        meta.update(lifecycle_stage=DELETED, last_update_time=now)
        meta["tags"] = files.read_value_dir(exp_dir / "tags")
        files.write_yaml_atomic(exp_dir / "meta.yaml", meta)

        def delete(m: dict[str, Any]) -> bool:
            if m.get("lifecycle_stage", ACTIVE) != ACTIVE:
                return False
            m.update(lifecycle_stage=DELETED, deleted_time=now)
            return True

        for run_dir in self.run_dirs_of(exp_dir):
            self._update_run_meta(run_dir, delete)
        os.replace(exp_dir, self.root / TRASH / experiment_id)
        self._run_dirs.clear()

    def restore_experiment(self, experiment_id: str) -> None:
        """Move a deleted experiment back from .trash and restore its runs."""
        experiment_id = str(experiment_id)
        exp_dir = self.experiment_dir(experiment_id)
        if exp_dir.parent.name != TRASH:
            raise InvalidInputError(f"experiment {experiment_id} is not deleted", hint="nothing to restore")
        target = self.root / experiment_id
        os.replace(exp_dir, target)
        meta = files.read_yaml(target / "meta.yaml")
        meta.update(lifecycle_stage=ACTIVE, last_update_time=files.now_ms())
        meta["tags"] = files.read_value_dir(target / "tags")
        files.write_yaml_atomic(target / "meta.yaml", meta)

        def undelete(m: dict[str, Any]) -> bool:
            if m.get("lifecycle_stage") != DELETED:
                return False
            m["lifecycle_stage"] = ACTIVE
            m.pop("deleted_time", None)
            return True

        for run_dir in self.run_dirs_of(target):
            self._update_run_meta(run_dir, undelete)
        self._run_dirs.clear()

    # ------------------------------------------------------------------ runs: lookup
    @staticmethod
    def run_dirs_of(exp_dir: Path) -> list[Path]:
        """The run directories of an experiment directory (reserved and hidden names skipped)."""
        try:
            entries = list(os.scandir(exp_dir))
        except FileNotFoundError:
            return []
        return [
            Path(e.path)
            for e in entries
            if e.name not in RESERVED_EXPERIMENT_DIRS and not e.name.startswith(".") and e.is_dir()
        ]

    def count_runs(self, experiment_id: str) -> int:
        """How many run directories an experiment holds (active and deleted runs)."""
        return len(self.run_dirs_of(self.experiment_dir(str(experiment_id))))

    def run_dir(self, run_id: str) -> Path:
        """The directory of a run; NotFoundError when no experiment holds it."""
        cached = self._run_dirs.get(run_id)
        if cached is not None and cached.is_dir():
            return cached
        validate_run_id(run_id)
        for exp_dir in self.experiment_dirs("all"):
            candidate = exp_dir / run_id
            if (candidate / "meta.yaml").is_file():
                self._run_dirs[run_id] = candidate
                return candidate
        raise NotFoundError(
            f"run {run_id!r} does not exist in {self.root}", hint="see `mlkit runs list --all`"
        )

    def resolve_run_id(self, prefix: str) -> str:
        """The full id of the one run whose id starts with `prefix` (≥ 6 chars, or a full id)."""
        prefix = prefix.strip()
        if prefix in self._run_dirs:
            return prefix
        validate_run_id(prefix)
        matches: set[str] = set()
        for exp_dir in self.experiment_dirs("all"):
            if (exp_dir / prefix / "meta.yaml").is_file():
                return prefix
            if len(prefix) >= 6:
                for path in self.run_dirs_of(exp_dir):
                    if path.name.startswith(prefix) and (path / "meta.yaml").is_file():
                        matches.add(path.name)
        if len(matches) == 1:
            return matches.pop()
        if len(matches) > 1:
            raise InvalidInputError(
                f"run id prefix {prefix!r} matches {len(matches)} runs: {', '.join(sorted(matches)[:5])}",
                hint="give more characters of the run id",
            )
        short = " (a prefix needs at least 6 characters)" if len(prefix) < 6 else ""
        raise NotFoundError(f"no run {prefix!r} in {self.root}{short}", hint="see `mlkit runs list --all`")

    def _read_run_meta(self, run_dir: Path) -> dict[str, Any]:
        try:
            return files.read_run_meta(run_dir / "meta.yaml")
        except FileNotFoundError as exc:
            raise NotFoundError(f"{run_dir / 'meta.yaml'}: run metadata is missing", hint="") from exc

    def _update_run_meta(self, run_dir: Path, change: Any, *, must_land: bool = False) -> None:
        """Rewrite a run's meta.yaml atomically. `must_land` (a terminal status): on a full disk,
        retry a few times, then rewrite it in the blocks it already has, so a run never stays
        RUNNING because its disk filled up."""
        meta = self._read_run_meta(run_dir)
        if change(meta) is False:
            return
        self._write_run_meta(run_dir, meta, must_land)
        self._journal(run_dir, ())  # status, times, name; every kind too once the run has ended

    @staticmethod
    def _write_run_meta(run_dir: Path, meta: dict[str, Any], must_land: bool) -> None:
        path = run_dir / "meta.yaml"
        for delay in STATUS_RETRY_DELAYS_S if must_land else ():
            try:
                files.write_yaml_atomic(path, meta)
                return
            except StoreError as exc:
                if not _disk_full(exc):
                    raise
                time.sleep(delay)
        try:
            files.write_yaml_atomic(path, meta)
        except StoreError as exc:
            if not (must_land and _disk_full(exc)):
                raise
            files.rewrite_in_place(path, files.dump_yaml(meta))

    def _journal(self, run_dir: Path, kinds: tuple[str, ...] = KINDS) -> None:
        """Keep the search cache current: journal the run's summary after a write (runsummary.py);
        a journal grown large is folded into the cache here. Never fails the write."""
        if record(run_dir, kinds):
            with contextlib.suppress(Exception):
                self.run_index().ingest([run_dir.parent])

    def _run_info(self, run_dir: Path, meta: dict[str, Any], tags: dict[str, str] | None = None) -> RunInfo:
        run_id = str(meta.get("run_id") or meta.get("run_uuid") or run_dir.name)
        status = meta.get("status", 1)
        status = INT_TO_STATUS.get(status, status) if isinstance(status, int) else str(status)
        run_name = meta.get("run_name") or ""
        if not run_name:
            if tags is None:
                try:
                    tags = {RUN_NAME_TAG: files.read_value(run_dir / "tags" / RUN_NAME_TAG)}
                except OSError:
                    tags = {}
            run_name = tags.get(RUN_NAME_TAG, "")
        end_time = meta.get("end_time") or None
        return RunInfo(
            run_id=run_id,
            run_uuid=run_id,
            experiment_id=str(meta.get("experiment_id", run_dir.parent.name)),
            run_name=str(run_name),
            user_id=str(meta.get("user_id") or "unknown"),
            status=status,
            start_time=meta.get("start_time"),
            end_time=end_time,
            artifact_uri=files.resolve_artifact_uri(run_dir, str(meta.get("artifact_uri") or "")),
            lifecycle_stage=str(meta.get("lifecycle_stage") or ACTIVE),
        )

    def _active_run_dir(self, run_id: str, *, deleted_ok: bool = False) -> Path:
        """The directory of a run that may be changed: an active one (InvalidInputError for a
        deleted run, as MLflow's), or with `deleted_ok` a deleted one too."""
        run_dir = self.run_dir(run_id)
        if deleted_ok:
            return run_dir
        meta = self._read_run_meta(run_dir)
        if meta.get("lifecycle_stage", ACTIVE) != ACTIVE:
            raise InvalidInputError(
                f"run {run_id} is deleted; it must be active to be changed",
                hint=f"restore it first: mlkit runs restore {run_id}",
            )
        return run_dir

    # ------------------------------------------------------------------ runs: create and read
    def create_run(
        self,
        experiment_id: str,
        *,
        run_name: str | None = None,
        tags: dict[str, Any] | None = None,
        start_time: int | None = None,
        user_id: str | None = None,
        status: str = RUNNING,
    ) -> Run:
        """Create a run in an active experiment, with all its directories: RUNNING, or SCHEDULED for
        one that a supervisor starts later (`mlkit run --run-id`: a Slurm job, a sweep's trial)."""
        if status not in (RUNNING, SCHEDULED):
            raise InvalidInputError(
                f"a new run's status must be RUNNING or SCHEDULED, not {status!r}",
                hint="create it RUNNING or SCHEDULED, then end it with set_terminated",
            )
        experiment = self.get_experiment(str(experiment_id))
        if experiment.lifecycle_stage != ACTIVE:
            raise InvalidInputError(
                f"could not create run under non-active experiment {experiment_id}",
                hint="restore the experiment or pick another one",
            )
        tags = {str(k): str(v) for k, v in (tags or {}).items()}
        validate_keys(list(tags), "tag")
        tag_name = tags.get(RUN_NAME_TAG)
        if run_name and tag_name and run_name != tag_name:
            raise InvalidInputError(
                f"run_name {run_name!r} differs from the {RUN_NAME_TAG} tag {tag_name!r}",
                hint="pass only one of them",
            )
        run_name = run_name or tag_name or random_run_name()
        tags[RUN_NAME_TAG] = run_name
        user_id = user_id or tags.get(USER_TAG) or _current_user()
        run_id = _uuid4().hex()  # as MLflow's uuid.uuid4().hex
        exp_dir = self.experiment_dir(experiment.experiment_id)
        run_dir = exp_dir / run_id
        try:
            run_dir.mkdir()
        except OSError as exc:
            raise fsio.write_error(run_dir, exc) from exc
        with fsio.removed_on_failure(run_dir, undo=lambda: unregister_live(run_dir)):
            self._make_run_dir(run_dir, tags)
            meta = self._new_run_meta(experiment, run_id, run_name, user_id, start_time, status)
            files.write_yaml_atomic(run_dir / "meta.yaml", meta)  # now it is a run
        self._run_dirs[run_id] = run_dir
        self._journal(run_dir)
        return Run(self._run_info(run_dir, meta, tags), RunData(params={}, metrics={}, tags=tags))

    @staticmethod
    def _make_run_dir(run_dir: Path, tags: dict[str, str]) -> None:
        """A new run's subdirectories and tag files, in its directory that no reader takes for a
        run yet (there is no meta.yaml); an owned run is registered live first."""
        try:
            for sub in ("metrics", "params", "tags", "artifacts"):
                (run_dir / sub).mkdir()
        except OSError as exc:
            raise fsio.write_error(run_dir, exc) from exc
        if PID_TAG in tags:  # an owned run: the lost-run scan must see it (before it is RUNNING)
            register_live(run_dir)
        tags_dir = run_dir / "tags"
        for key, value in tags.items():  # meta.yaml is written last: until then no reader sees the run
            if "/" in key:
                (tags_dir / key).parent.mkdir(parents=True, exist_ok=True)
            files.write_new(tags_dir / key, value)

    @staticmethod
    def _new_run_meta(
        experiment: Experiment, run_id: str, run_name: str, user_id: str, start_time: int | None, status: str
    ) -> dict[str, Any]:
        """A new run's meta.yaml, as MLflow's FileStore writes it."""
        location = experiment.artifact_location.rstrip("/")
        return {
            "artifact_uri": f"{location}/{run_id}/artifacts",
            "end_time": None,
            "entry_point_name": "",
            "experiment_id": experiment.experiment_id,
            "lifecycle_stage": ACTIVE,
            "run_id": run_id,
            "run_name": run_name,
            "run_uuid": run_id,
            "source_name": "",
            "source_type": 4,
            "source_version": "",
            "start_time": int(start_time) if start_time is not None else files.now_ms(),
            "status": STATUS_TO_INT[status],
            "tags": [],
            "user_id": user_id,
        }

    def get_run(self, run_id: str) -> Run:
        """A run with its params, tags and latest metrics; NotFoundError when missing."""
        run_dir = self.run_dir(run_id)
        meta = self._read_run_meta(run_dir)
        tags = files.read_value_dir(run_dir / "tags")
        metrics = {}
        for key in files.list_keys(run_dir / "metrics"):
            latest = files.latest_metric(self._read_metric_file(run_dir, key))
            if latest is not None:
                metrics[key] = latest.value
        data = RunData(params=files.read_value_dir(run_dir / "params"), metrics=metrics, tags=tags)
        return Run(self._run_info(run_dir, meta, tags), data)

    def _read_metric_file(self, run_dir: Path, key: str) -> list[Metric]:
        path = run_dir / "metrics" / key
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"{path}: cannot read: {exc}", hint="check permissions") from exc
        return files.parse_metric_lines(data, key, path)[0]

    def get_metric_history(self, run_id: str, key: str) -> list[Metric]:
        """Every logged value of a metric, in the order logged (a torn last line is skipped)."""
        validate_key(key, "metric")
        return self._read_metric_file(self.run_dir(run_id), key)

    def metric_keys(self, run_id: str) -> list[str]:
        """The keys of every metric the run logged."""
        return sorted(files.list_keys(self.run_dir(run_id) / "metrics"))

    # ------------------------------------------------------------------ runs: log
    def log_param(self, run_id: str, key: str, value: Any) -> None:
        """Log a param; logging a different value for a logged key is an error (as MLflow)."""
        self.log_params(run_id, {key: value})

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        """Log several params: every key is checked (name, collisions) before any is written."""
        checked = dict(
            zip(validate_keys(list(params), "param"), map(param_value, params.values()), strict=True)
        )
        run_dir = self._active_run_dir(run_id)
        _check_key_paths(run_dir / "params", checked, "param")
        for key, value in checked.items():
            self._write_param(run_dir, run_id, key, value)
        self._journal(run_dir, ("param",))

    def _write_param(self, run_dir: Path, run_id: str, key: str, value: str) -> None:
        path = _key_path(run_dir / "params", key, "param")
        if files.create_exclusive(path, value, tmp_dir=run_dir):
            return
        old = files.read_value(path)
        if old != value:
            raise InvalidInputError(
                f"changing param values is not allowed: param {key!r} was already logged with value "
                f"{old!r} for run {run_id}; attempted to log {value!r}",
                hint="params are immutable; log the new value under another key or start a new run",
            )

    @staticmethod
    def _write_tag_file(tags_dir: Path, key: str, value: str, kind: str = "tag") -> None:
        """Write one tag file; its temp file lies in the run (or experiment) directory above
        `tags/`, where neither MLflow nor mlkit lists keys."""
        files.write_atomic(_key_path(tags_dir, key, kind), value, tmp_dir=tags_dir.parent)

    def set_tag(self, run_id: str, key: str, value: Any) -> None:
        """Set (or overwrite) a tag; `mlflow.runName` also renames the run in meta.yaml."""
        self.set_tags(run_id, {key: value})

    def set_tags(self, run_id: str, tags: dict[str, Any], *, deleted_ok: bool = False) -> None:
        """Set several tags: every key is checked (name, collisions) first, then each tag file is
        written once. `deleted_ok`: as for set_terminated (the tags saying how a run ended)."""
        validate_keys(list(tags), "tag")
        if not tags:
            return
        run_dir = self._active_run_dir(run_id, deleted_ok=deleted_ok)
        if PID_TAG in tags:  # an owner takes the run: the lost-run scan must see it from now on
            register_live(run_dir)
        _check_key_paths(run_dir / "tags", tags, "tag")
        for key, value in tags.items():
            self._write_tag_file(run_dir / "tags", key, str(value))
        if RUN_NAME_TAG in tags:
            name = str(tags[RUN_NAME_TAG])
            self._update_run_meta(run_dir, lambda m: m.update(run_name=name))
        if tags.keys() != {HEARTBEAT_TAG}:  # a heartbeat changes nothing a search looks for
            self._journal(run_dir, ("tag",))

    def delete_tag(self, run_id: str, key: str) -> None:
        """Remove a tag; NotFoundError when the run has no such tag."""
        run_dir = self._active_run_dir(run_id)
        path = run_dir / "tags" / validate_key(key, "tag")
        try:
            path.unlink()
        except FileNotFoundError as exc:
            raise NotFoundError(f"run {run_id} has no tag {key!r}", hint="see `mlkit runs show`") from exc
        self._journal(run_dir, ("tag",))

    def log_metric(
        self, run_id: str, key: str, value: float, step: int = 0, timestamp: int | None = None
    ) -> None:
        """Append one metric value: a single write to a file kept open while the run logs."""
        if type(value) is not float:
            value = self._metric_value(key, value)
        if timestamp is None:
            timestamp = files.now_ms()
        elif type(timestamp) is not int or timestamp < 0:
            timestamp = self._metric_int(key, timestamp, "timestamp", minimum=0)
        if type(step) is not int:
            step = self._metric_int(key, step, "step")
        line = f"{timestamp} {value!r} {step}\n".encode()
        with self._fd_lock:  # a closed fd number may be reused: never write through a stale one
            fd = self._metric_fds.get((run_id, key))
            if fd is None:
                fd = self._open_metric(run_id, key)
            try:  # the whole line or, on any error, nothing (files.append_whole, inlined: hot path)
                written = os.write(fd, line)
                if written != len(line):
                    files.finish_append(fd, line, written)
            except OSError as exc:
                raise fsio.write_error(self._metric_path(run_id, key), exc) from None

    def log_metrics(
        self, run_id: str, metrics: dict[str, float], step: int = 0, timestamp: int | None = None
    ) -> None:
        """Append one value for each metric, with one timestamp; every key is checked first."""
        timestamp = files.now_ms() if timestamp is None else timestamp
        new = [key for key in metrics if (run_id, key) not in self._metric_fds]
        if new:
            validate_keys(list(metrics), "metric")
            _check_key_paths(self._active_run_dir(run_id) / "metrics", new, "metric")
        for key, value in metrics.items():
            if type(value) is not float:
                self._metric_value(key, value)
        for key, value in metrics.items():
            self.log_metric(run_id, key, value, step=step, timestamp=timestamp)

    def _metric_path(self, run_id: str, key: str) -> Path:
        try:
            return self.run_dir(run_id) / "metrics" / key
        except MlkitError:
            return Path(key)

    @staticmethod
    def _metric_value(key: str, value: Any) -> float:
        if isinstance(value, (str, bytes)) or value is None:
            raise InvalidInputError(
                f"metric {key!r}: value {value!r} is not a number", hint="log a float or an int"
            )
        try:
            return float(value)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"metric {key!r}: value {value!r} is not a number", hint="log a float or an int"
            ) from exc

    @staticmethod
    def _metric_int(key: str, value: Any, what: str, minimum: int | None = None) -> int:
        try:
            number = int(value)
            if isinstance(value, str) or number != value:
                raise ValueError
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"metric {key!r}: {what} {value!r} is not an integer", hint=f"pass an int {what}"
            ) from exc
        if minimum is not None and number < minimum:
            raise InvalidInputError(f"metric {key!r}: {what} {value!r} is negative", hint=f"pass {what} ≥ 0")
        return number

    def _open_metric(self, run_id: str, key: str) -> int:
        validate_key(key, "metric")
        run_dir = self._active_run_dir(run_id)
        path = _key_path(run_dir / "metrics", key, "metric")
        if len(self._metric_fds) >= MAX_OPEN_METRIC_FILES:
            self.close()
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except IsADirectoryError:
            raise _collision_below(run_dir / "metrics", key, "metric") from None
        except OSError as exc:
            raise fsio.write_error(path, exc) from exc
        try:
            self._repair_torn_tail(fd)
        except OSError as exc:
            os.close(fd)
            raise fsio.write_error(path, exc) from exc
        self._metric_fds[(run_id, key)] = fd
        return fd

    @staticmethod
    def _repair_torn_tail(fd: int) -> None:
        """Cut a partial last line left by a writer that died mid-write, so appends stay parseable."""
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return
        chunk = os.pread(fd, min(size, 4096), max(0, size - 4096))
        cut = chunk.rfind(b"\n")
        os.ftruncate(fd, size - len(chunk) + cut + 1 if cut >= 0 else max(0, size - len(chunk)))

    def close_run_files(self, run_id: str) -> None:
        """Close the metric files kept open for one run."""
        with self._fd_lock:
            for handle in [h for h in self._metric_fds if h[0] == run_id]:
                os.close(self._metric_fds.pop(handle))

    def close(self) -> None:
        """Close every metric file this store keeps open."""
        with self._fd_lock:
            fds, self._metric_fds = self._metric_fds, {}
            for fd in fds.values():
                try:
                    os.close(fd)
                except OSError:
                    pass
        if self._index is not None:
            self._index.close()

    def set_terminated(
        self, run_id: str, status: str, end_time: int | None = None, *, deleted_ok: bool = False
    ) -> None:
        """End a run: status FINISHED, FAILED or KILLED (or any status MLflow knows) and end time.
        `deleted_ok`: a supervisor records how its run ended even when the run (or its
        experiment) was deleted while it ran, a soft delete, so it is never left RUNNING."""
        if status not in STATUS_TO_INT:
            raise InvalidInputError(
                f"invalid run status {status!r}", hint=f"use one of {', '.join(STATUS_TO_INT)}"
            )
        self.close_run_files(run_id)
        run_dir = self._active_run_dir(run_id, deleted_ok=deleted_ok)
        end = int(end_time) if end_time is not None else files.now_ms()
        self._update_run_meta(
            run_dir, lambda m: m.update(status=STATUS_TO_INT[status], end_time=end), must_land=True
        )
        if status not in (RUNNING, SCHEDULED):
            unregister_live(run_dir)

    def update_run_status(self, run_id: str, status: str) -> None:
        """Set a run's status without touching its end time (e.g. SCHEDULED -> RUNNING)."""
        if status not in STATUS_TO_INT:
            raise InvalidInputError(
                f"invalid run status {status!r}", hint=f"use one of {', '.join(STATUS_TO_INT)}"
            )
        run_dir = self._active_run_dir(run_id)
        if status == RUNNING:  # live again: the lost-run scan must see it (docs/tracking.md)
            register_live(run_dir)
        self._update_run_meta(run_dir, lambda m: m.update(status=STATUS_TO_INT[status]))

    def restart_run(self, run_id: str) -> None:
        """A supervisor attached to an existing run (`mlkit run --run-id`): RUNNING again, no end time."""
        run_dir = self._active_run_dir(run_id)
        register_live(run_dir)
        self._update_run_meta(
            run_dir, lambda m: m.update(status=STATUS_TO_INT[RUNNING], end_time=None), must_land=True
        )

    def delete_run(self, run_id: str) -> None:
        """Mark a run deleted (it stays on disk until gc), as MLflow does."""
        run_dir = self.run_dir(run_id)
        self.close_run_files(run_id)
        self._update_run_meta(
            run_dir, lambda m: m.update(lifecycle_stage=DELETED, deleted_time=files.now_ms())
        )

    def restore_run(self, run_id: str) -> None:
        """Mark a deleted run active again."""
        run_dir = self.run_dir(run_id)

        def restore(m: dict[str, Any]) -> None:
            m["lifecycle_stage"] = ACTIVE
            m.pop("deleted_time", None)

        self._update_run_meta(run_dir, restore)

    # ------------------------------------------------------------------ artifacts
    def artifact_dir(self, run_id: str) -> Path:
        """The local artifact directory of a run (resolved next to the run if the store moved)."""
        run_dir = self.run_dir(run_id)
        meta = self._read_run_meta(run_dir)
        stored = files.path_from_uri(str(meta.get("artifact_uri") or ""))
        if stored is not None and stored.exists():
            return stored
        return run_dir / "artifacts"

    def log_artifact(
        self, run_id: str, local_path: str | os.PathLike[str], artifact_path: str | None = None
    ) -> None:
        """Copy a local file (or a directory's content) into the run's artifacts.

        Every destination stays inside the run: directories are opened one by one without
        following links (a link on the way is refused), and each file is written to a temp file
        and renamed over its name (a link there is replaced, never written through)."""
        source = Path(local_path)
        if not source.exists():
            raise NotFoundError(
                f"{source}: no such file or directory to log as an artifact", hint="check the path"
            )
        sub = validate_artifact_path(artifact_path)
        if source.is_dir():
            self._copy_tree_in(run_id, source, sub, set())
            return
        with self._artifact_dir_fd(run_id, sub) as (dir_fd, shown):
            self._write_artifact_at(dir_fd, source.name, shown, source=source)

    def log_artifacts(
        self, run_id: str, local_dir: str | os.PathLike[str], artifact_path: str | None = None
    ) -> None:
        """Copy a directory's content into the run's artifacts."""
        if not Path(local_dir).is_dir():
            raise NotFoundError(f"{local_dir}: not a directory", hint="pass a directory")
        self.log_artifact(run_id, local_dir, artifact_path)

    def write_artifact(self, run_id: str, artifact_file: str, data: bytes | str) -> None:
        """Write `data` to an artifact file of the run (log_text, log_dict), safely as log_artifact."""
        rel = validate_artifact_path(artifact_file)
        if not rel:
            raise InvalidInputError("empty artifact file name", hint="e.g. 'config.json'")
        parent, name = posixpath.split(rel)
        with self._artifact_dir_fd(run_id, parent) as (dir_fd, shown):
            self._write_artifact_at(
                dir_fd, name, shown, data=data.encode("utf-8") if isinstance(data, str) else data
            )

    def artifact_subdir(self, run_id: str, artifact_path: str) -> Path:
        """Make the artifact directory `artifact_path` of the run (each level checked: no links)
        and return its path, for writers that fill a directory themselves (log_model)."""
        rel = validate_artifact_path(artifact_path)
        with self._artifact_dir_fd(run_id, rel):
            pass
        base = self.artifact_dir(run_id)
        return base / rel if rel else base

    def _copy_tree_in(self, run_id: str, source: Path, sub: str, seen: set[tuple[int, int]]) -> None:
        st = source.stat()
        if (st.st_dev, st.st_ino) in seen:  # a link loop in the source
            return
        seen.add((st.st_dev, st.st_ino))
        entries = sorted(os.scandir(source), key=lambda e: e.name)
        with self._artifact_dir_fd(run_id, sub) as (dir_fd, shown):
            for entry in entries:
                if entry.is_file():
                    self._write_artifact_at(dir_fd, entry.name, shown, source=Path(entry.path))
        for entry in entries:
            if entry.is_dir():
                self._copy_tree_in(
                    run_id, Path(entry.path), posixpath.join(sub, entry.name) if sub else entry.name, seen
                )

    @contextmanager
    def _artifact_dir_fd(self, run_id: str, rel: str) -> Iterator[tuple[int, Path]]:
        """An open descriptor of artifact directory `rel` (made if missing), reached from the
        run's artifact root one level at a time without following a link."""
        base = self.artifact_dir(run_id)
        shown = base
        try:
            base.mkdir(parents=True, exist_ok=True)
            fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise fsio.write_error(base, exc) from exc
        try:
            for part in rel.split("/") if rel else ():
                shown = shown / part
                try:
                    os.mkdir(part, 0o777, dir_fd=fd)
                except FileExistsError:
                    pass  # a directory already, or a link: the open below tells
                except OSError as exc:
                    raise fsio.write_error(shown, exc) from exc
                try:
                    child = os.open(
                        part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd
                    )
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise _artifact_link(shown, base) from None
                    raise fsio.write_error(shown, exc) from exc
                os.close(fd)
                fd = child
            yield fd, shown
        finally:
            os.close(fd)

    @staticmethod
    def _write_artifact_at(
        dir_fd: int, name: str, shown: Path, *, source: Path | None = None, data: bytes = b""
    ) -> None:
        """Write file `name` in the open directory: a temp file renamed over the name, so a link
        there is replaced, never written through. From `source` (mode and times kept) or `data`."""
        target = shown / name
        with contextlib.suppress(OSError):
            if stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                raise InvalidInputError(
                    f"artifact {target}: a directory of that name is there", hint="log it under another name"
                )
        if source is None:
            fsio.atomic_write(name, data, dir_fd=dir_fd, display=target)
            return
        try:
            src = open(source, "rb")  # noqa: SIM115 (closed below)
        except OSError as exc:
            raise StoreError(f"{source}: cannot read: {exc.strerror}", hint="check the file") from exc
        with src:
            st = os.fstat(src.fileno())

            def copy(fd: int) -> None:
                while chunk := src.read(1 << 20):
                    fsio.write_all(fd, chunk)
                os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))

            fsio.atomic_write(name, copy, mode=stat.S_IMODE(st.st_mode), dir_fd=dir_fd, display=target)

    def artifact_file(self, run_id: str, artifact_file: str) -> Path:
        """The path an artifact file of this run has (validated to stay inside the artifacts)."""
        rel = validate_artifact_path(artifact_file)
        if not rel:
            raise InvalidInputError("empty artifact file name", hint="e.g. 'config.json'")
        base = self.artifact_dir(run_id)
        path = base / rel
        self._check_inside(base, path)
        return path

    @staticmethod
    def _check_inside(base: Path, path: Path) -> None:
        real_base = os.path.realpath(base)
        real = os.path.realpath(path)
        if real != real_base and not real.startswith(real_base + os.sep):
            raise InvalidInputError(
                f"artifact path {path} resolves outside the run's artifact directory {base}",
                hint="use a relative path inside the run (no symlinks leading out)",
            )

    def list_artifacts(self, run_id: str, path: str | None = None) -> list[FileInfo]:
        """The entries of the run's artifact directory (or a subdirectory of it)."""
        rel = validate_artifact_path(path)
        base = self.artifact_dir(run_id)
        directory = base / rel if rel else base
        self._check_inside(base, directory)
        if not directory.is_dir():
            return []
        infos = []
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            child = f"{rel}/{entry.name}" if rel else entry.name
            is_dir = entry.is_dir()
            infos.append(FileInfo(child, is_dir, None if is_dir else entry.stat().st_size))
        return infos

    # ------------------------------------------------------------------ search and upkeep
    def search_runs(
        self,
        experiment_ids: list[str] | str | None,
        filter_string: str = "",
        order_by: list[str] | None = None,
        max_results: int = 1000,
        page_token: str | None = None,
        run_view: str | int = "active",
    ) -> tuple[list[Run], str | None]:
        """Runs matching an MLflow filter string, ordered and paged as MLflow does."""
        # imported here, not at the top: search needs the index, and sqlite3 stays out of `mlkit run`
        from mlkit.tracking.search import search_runs

        return search_runs(self, experiment_ids, filter_string, order_by, max_results, page_token, run_view)

    def run_index(self) -> RunIndex:
        """The store's search cache (`<root>/.mlkit-index.sqlite`, mlkit.tracking.index): one per
        store object, opened on first use, closed by close()."""
        if self._index is None:
            # imported here, not at the top: sqlite3 stays out of `mlkit run` (tests/runner/test_imports_run.py)
            from mlkit.tracking.index import RunIndex

            self._index = RunIndex(self.root)
        return self._index

    def mark_lost_runs(self, *, whole: bool = False) -> list[str]:
        """Mark RUNNING runs whose owner is gone FAILED (tag mlkit.failure_reason=lost); their ids.

        This runs before every `mlkit run`: mlkit.tracking.lost finds the candidates among the runs
        registered live (`whole`, for gc: among every run); each is checked again here."""
        lost: list[str] = []
        for run_dir, _tags in lost_runs(self.experiment_dirs("all"), whole=whole):
            try:  # judged again under the run's attach lock: a supervisor taking it over holds it
                with fsio.locked(run_dir / ATTACH_LOCK, wait=0, what=f"run {run_dir.name}",
                                 hint="a supervisor is taking it over", mode=0o644, other_owners=True):  # fmt: skip
                    meta = files.read_run_meta(run_dir / "meta.yaml")
                    run_id = str(meta.get("run_id") or meta.get("run_uuid") or run_dir.name)
                    if meta.get("lifecycle_stage", ACTIVE) != ACTIVE:
                        continue
                    run = self.get_run(run_id)
                    if run.info.status != RUNNING or not is_owner_gone(run.data.tags):
                        continue  # it ended, or a new owner took it over, while we looked
                    self.set_tag(run_id, FAILURE_REASON_TAG, "lost")
                    beat = run.data.tags.get(HEARTBEAT_TAG, "")  # its last sign of life,
                    start = run.info.start_time or 0  # but never before its start
                    end = max(int(beat), start) if beat.isdigit() else None
                    self.set_terminated(run_id, FAILED, end_time=end)
            except (MlkitError, OSError):
                continue  # deleted or removed meanwhile, or being taken over
            lost.append(run_id)
        for run_id in lost:  # what its dead writers left half-written goes too
            with contextlib.suppress(MlkitError, OSError):
                remove_temp_files(run_temp_files(self.run_dir(run_id)))
        return lost
