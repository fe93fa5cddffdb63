"""Lost runs: RUNNING runs whose owner process is gone are marked FAILED (mlkit.failure_reason=lost).

On this host the owner is `mlkit.pid` started at `mlkit.pid_start` (so a reused PID does not
count); on another host, a `mlkit.heartbeat` older than MLKIT_HEARTBEAT_TIMEOUT seconds (default
120). Runs without ownership tags (e.g. written by MLflow) are never touched. This module finds
them (and the temp files dead writers left); FileStore.mark_lost_runs marks them.

The scan runs before every `mlkit run` and `mlkit runs list`, so it reads only the runs that may be
live: the store registers a run (an empty file `<experiment>/.mlkit-live/<run id>`) before its
ownership tags or a RUNNING status are written, and removes the file when it ends the run. An
experiment whose runs are all registered this way holds `<experiment>/.mlkit-live/.all`; one
without it (written before this scheme, or by MLflow) is scanned whole once, its possibly running
runs registered, and `.all` written (docs/tracking.md, "Lost runs"). MLflow takes `.mlkit-live`
for a directory that is not a run and skips it (at debug level), as it does for artifact folders.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from mlkit import procid
from mlkit.procid import hostname
from mlkit.tracking import files
from mlkit.tracking.layout import RESERVED_EXPERIMENT_DIRS

HOST_TAG, PID_TAG, PID_START_TAG, HEARTBEAT_TAG = (
    "mlkit.host",
    "mlkit.pid",
    "mlkit.pid_start",
    "mlkit.heartbeat",
)
FAILURE_REASON_TAG = "mlkit.failure_reason"
# in a run's directory: held by a supervisor taking the run over (`mlkit run --run-id`) and by
# FileStore.mark_lost_runs while it judges the run, so a run is never marked lost as it is taken over
ATTACH_LOCK = ".mlkit-attach.lock"
SLURM_JOB_TAG = "mlkit.slurm.job_id"  # as mlkit.backends.slurm.JOB_ID_TAG
PID_START_TOLERANCE_S = 1.0  # as mlkit.procid.START_TOLERANCE_S
_META_READ = 1 << 16  # a run's meta.yaml is well under 1 KiB


def heartbeat_timeout() -> float:
    """Seconds after which another host's run without a fresh heartbeat counts as lost."""
    try:
        return float(os.environ.get("MLKIT_HEARTBEAT_TIMEOUT", "120"))
    except ValueError:
        return 120.0


def process_start_time(pid: int) -> float | None:
    """Start time (epoch seconds) of a live process, None when it is gone or a zombie, -1.0 when
    it is alive but not ours to inspect (mlkit.procid.start_time)."""
    return procid.start_time(pid)


def ownership_tags(pid: int | None = None) -> dict[str, str]:
    """The mlkit.host / mlkit.pid / mlkit.pid_start tags naming `pid` (default: this process)."""
    pid = os.getpid() if pid is None else pid
    start = process_start_time(pid)
    tags = {HOST_TAG: hostname(), PID_TAG: str(pid)}
    if start is not None and start >= 0:
        tags[PID_START_TAG] = f"{start:.3f}"
    return tags


def is_owner_gone(tags: dict[str, str], *, host: str | None = None, now: float | None = None) -> bool:
    """True when the ownership tags say the run's owner is no longer alive."""
    host = host or hostname()
    now = time.time() if now is None else now
    if tags.get(HOST_TAG) == host and tags.get(PID_TAG, "").isdigit():
        started = process_start_time(int(tags[PID_TAG]))
        if started is None:
            return True
        if started < 0 or PID_START_TAG not in tags:
            return False
        try:
            return abs(started - float(tags[PID_START_TAG])) > PID_START_TOLERANCE_S
        except ValueError:
            return False
    beat = tags.get(HEARTBEAT_TAG, "")
    if beat.isdigit():
        return now - int(beat) / 1000 > heartbeat_timeout()
    return False


LIVE_DIR = ".mlkit-live"  # <experiment>/.mlkit-live/<run id>: a run that may be live
ALL_REGISTERED = ".all"  # <experiment>/.mlkit-live/.all: every run that may be live is registered
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _live_dir(exp_dir: str, *, create: bool) -> int | None:
    """A descriptor of the experiment's registry directory (never through a link), or None."""
    path = f"{exp_dir}/{LIVE_DIR}"
    if create:
        with contextlib.suppress(OSError):  # there already, or not ours to make
            os.mkdir(path, 0o777)
    try:
        return os.open(path, _DIR_FLAGS)
    except OSError:
        return None


def _touch(exp_dir: str, name: str) -> None:
    """Create the empty file `name` in the experiment's registry (made if missing); best effort."""
    fd = _live_dir(exp_dir, create=True)
    if fd is None:
        return
    try:
        with contextlib.suppress(OSError):  # EEXIST: there already
            os.close(os.open(name, _NEW_FILE, 0o666, dir_fd=fd))
    finally:
        os.close(fd)


def register_live(run_dir: Path | str) -> None:
    """Note that this run may be live (RUNNING, with an owner): call it before that is written.
    Best effort: a store we cannot write to is one we are not creating runs in."""
    exp_dir, _, run_id = str(run_dir).rstrip("/").rpartition("/")
    _touch(exp_dir, run_id)


def unregister_live(run_dir: Path | str) -> None:
    """The run has ended (its end is written): the lost-run scan need not read it any more."""
    exp_dir, _, run_id = str(run_dir).rstrip("/").rpartition("/")
    with contextlib.suppress(OSError):
        os.unlink(f"{exp_dir}/{LIVE_DIR}/{run_id}")


def _registered(exp_dir: str) -> list[str] | None:
    """The run directories registered live in this experiment; None when its runs are not all
    registered (no `.all` in its registry)."""
    fd = _live_dir(exp_dir, create=False)
    if fd is None:
        return None
    try:
        names = os.listdir(fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    if ALL_REGISTERED not in names:
        return None
    return [f"{exp_dir}/{name}" for name in names if name.isalnum()]  # never `..` or `.all`


def _candidates(exp_dirs: Iterable[Path], whole: bool) -> Iterator[str]:
    """The run directories of these experiments that may be live: the registered ones where the
    experiment registers its runs; every run directory where it does not (then each that may say
    RUNNING is registered, and so is the experiment, so that the next scan reads only those)."""
    for exp_dir in map(str, exp_dirs):
        registered = None if whole else _registered(exp_dir)
        if registered is not None:
            yield from registered
            continue
        try:
            with os.scandir(exp_dir) as entries:
                run_dirs = [
                    entry.path
                    for entry in entries
                    if entry.name not in RESERVED_EXPERIMENT_DIRS
                    and not entry.name.startswith(".")
                    and entry.is_dir()
                ]
        except OSError:
            continue
        owned = [d for d in run_dirs if _maybe_running(d) and os.path.lexists(f"{d}/tags/{PID_TAG}")]
        if whole:  # gc, whose dry run changes nothing but the lost runs: judge them, register nothing
            yield from owned
            continue
        for run_dir in owned:  # only owned runs are ever judged: register those
            register_live(run_dir)
            yield run_dir
        _touch(exp_dir, ALL_REGISTERED)


_UNKNOWN = b"?"
_RUNNING = (b"1", b"RUNNING")  # MLflow writes the number (RUNNING = 1)
_ENDED = (b"3", b"4", b"5", b"FINISHED", b"FAILED", b"KILLED")


def _status(run_dir: str) -> bytes | None:
    """The value of the `status:` line of the run's meta.yaml, without parsing YAML: None when
    there is no meta.yaml (being created or removed), `_UNKNOWN` when the file is unusual (no such
    line, a huge file, not a regular file).

    meta.yaml is written with one top-level `key: value` per line (MLflow's safe_dump), so the
    `status:` line tells. Plain os calls, never through a link or into a FIFO."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(run_dir + "/meta.yaml", flags)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None  # a FIFO or a device planted as meta.yaml: no run to judge
        text = os.read(fd, _META_READ)
    except OSError:
        return _UNKNOWN
    finally:
        os.close(fd)
    if len(text) == _META_READ:
        return _UNKNOWN  # not a meta.yaml mlkit or MLflow writes: let the careful path decide
    _, found, rest = (b"\n" + text).partition(b"\nstatus:")
    if not found:
        return _UNKNOWN
    return rest.split(b"\n", 1)[0].strip().strip(b"'\"")


def _maybe_running(run_dir: str) -> bool:
    """False when the run's meta.yaml says for sure that it is not RUNNING (or there is none)."""
    status = _status(run_dir)
    return status is not None and (status == _UNKNOWN or status in _RUNNING)


def lost_runs(exp_dirs: Iterable[Path], *, whole: bool = False) -> list[tuple[Path, dict[str, str]]]:
    """The run directories (of these experiments) that may say RUNNING and whose owner is gone,
    each with its ownership tags; FileStore.mark_lost_runs checks and marks them.

    This runs before every `mlkit run`, so it reads only the runs registered live (see the module
    docstring); of those, only runs whose meta.yaml may say RUNNING are read further. `whole`
    (gc): every run of the experiments, registered or not."""
    host = hostname()
    found: list[tuple[Path, dict[str, str]]] = []
    for path in _candidates(exp_dirs, whole):
        status = _status(path)
        if status in _ENDED:  # ended by a writer that did not unregister it (an MLflow client)
            unregister_live(path)
            continue
        if status is None or (status != _UNKNOWN and status not in _RUNNING):
            continue
        run_dir = Path(path)
        tags = {}
        for key in (HOST_TAG, PID_TAG, PID_START_TAG, HEARTBEAT_TAG):
            try:
                tags[key] = files.read_value(run_dir / "tags" / key).strip()
            except OSError:
                continue
        if (run_dir / "tags" / SLURM_JOB_TAG).exists():
            continue  # a Slurm job's run: Slurm says how it ended (mlkit.backends.slurm.status), never a guess
        if tags and is_owner_gone(tags, host=host):
            found.append((run_dir, tags))
            if tags.get(HOST_TAG) == host:
                stop_container(run_dir)
    return found


CONTAINER_TAG = "mlkit.container_engine"  # a docker_env run's engine; its container is mlkit-<run id>


def stop_container(run_dir: Path) -> None:
    """A docker_env run whose supervisor died may have left its container running (a killed
    client does not take it along): remove it (`<engine> rm -f mlkit-<run id>`)."""
    try:
        engine = files.read_value(run_dir / "tags" / CONTAINER_TAG).strip()
    except OSError:
        return
    if engine not in ("docker", "podman") or not re.fullmatch(r"[0-9a-f]{32}", run_dir.name):
        return
    # import budget: the subprocess helper loads only when a lost run had a container
    from mlkit import proc

    with contextlib.suppress(Exception):  # no engine, no such container: nothing left to stop
        proc.run([engine, "rm", "-f", f"mlkit-{run_dir.name}"], timeout=60)


# ------------------------------------------------------------------------ leftover temp files
TEMP_GRACE_S = 60.0  # a temp file is written in moments: one untouched this long is left over
_TEMP_NAME_RE = re.compile(r"\..+\.(\d+)\.\d+\.tmp")  # fsio.temp_name: .<name>.<pid>.<ns>.tmp
_RUN_TEMP_TREES = ("params", "tags", "metrics", "artifacts")  # older writers left theirs there


def _is_stale_temp(entry: os.DirEntry[str], now: float) -> bool:
    match = _TEMP_NAME_RE.fullmatch(entry.name)
    if match is None:
        return False
    try:
        age = now - entry.stat(follow_symlinks=False).st_mtime
    except OSError:
        return False
    if age > TEMP_GRACE_S:
        return True
    # its writer is gone (a moment's grace: a pid from another host or container means nothing here)
    return age > 2.0 and procid.start_time(int(match.group(1))) is None


def stale_temp_files(
    directory: Path | str, *, recursive: bool = False, now: float | None = None
) -> list[Path]:
    """Temp files (and temp directories) under `directory` that a writer left behind: named as
    fsio.temp_name names them, untouched for TEMP_GRACE_S or written by a process that is gone."""
    now = time.time() if now is None else now
    found: list[Path] = []
    stack = [str(directory)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            if _is_stale_temp(entry, now):
                found.append(Path(entry.path))
            elif recursive and entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
    return found


def run_temp_files(run_dir: Path | str, *, now: float | None = None) -> list[Path]:
    """A run's leftover temp files: in the run directory itself and in its params/, tags/,
    metrics/ and artifacts/ trees."""
    found = stale_temp_files(run_dir, now=now)
    for sub in _RUN_TEMP_TREES:
        found += stale_temp_files(Path(run_dir) / sub, recursive=True, now=now)
    return found


def remove_temp_files(paths: list[Path]) -> int:
    """Remove leftover temp files (a temp directory with what is in it); how many went."""
    removed = 0
    for path in paths:
        try:
            if path.is_dir() and not path.is_symlink():
                import shutil  # import budget: shutil (bz2, lzma) loads only to remove a leftover

                shutil.rmtree(path)
            else:
                path.unlink()
            removed += 1
        except FileNotFoundError:
            continue
        except OSError:
            continue  # not ours to remove (another user's store): gc reports the rest
    return removed
