"""The environment cache: one directory per (content hash, manager) under `settings.env_dir()`.

Layout::

    <env_dir>/<hash>-<manager>/            the environment (a venv or a conda prefix)
    <env_dir>/<hash>-<manager>/.mlkit-complete   JSON written last: only envs with it are used
    <env_dir>/<hash>-<manager>/.mlkit-last-used  touched on every reuse
    <env_dir>/.locks/<hash>-<manager>.lock  fcntl lock held for the whole build
    <env_dir>/logs/<hash>-<manager>.log     the build log (appended: one section per build)

Venvs and conda prefixes are not relocatable (absolute paths in scripts, pyvenv.cfg, patched
prefixes), so an env is built *at its final path* while the per-key lock is held, and the marker is
written last (write-temp-then-rename). Reuse needs no lock: a directory with the marker is complete.
A directory without the marker is a build that died (SIGKILL, power loss): whoever holds the lock
next deletes it and builds again. A build that fails is deleted before the lock is released.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from mlkit import fsio, procid, settings
from mlkit import proc as procs
from mlkit.errors import EnvBuildError, MlkitError, UnsafeStateError, UsageError

MARKER = ".mlkit-complete"
LAST_USED = ".mlkit-last-used"


def env_root() -> Path:
    """`settings.env_dir()` made absolute (venvs are built in place and used from the project's
    directory), refused (UnsafeStateError) when another user could write into it."""
    root = settings.env_dir().absolute()
    if os.pathsep in str(root):  # `<env>/bin` goes first on PATH: it would be two entries, neither the env's
        raise UsageError(
            f"environment dir {root}: holds {os.pathsep!r}, which cannot be in PATH (a command's `python` would"
            " not be the environment's)",
            hint=f"set MLKIT_ENV_DIR to a path without {os.pathsep!r}",
        )
    check_root(root)
    return root


ENV_DIR_RISK = "an environment your runs would execute"


def check_root(root: Path, var: str = "MLKIT_ENV_DIR", risk: str = ENV_DIR_RISK) -> None:
    """Refuse a directory whose entries mlkit runs (the env dir; the cache dir's conda packages)
    when it is not ours (or root's), or others can write to it.

    Whoever can create entries in the env dir can plant `<hash>-<manager>/.mlkit-complete` naming
    their own python, which our next run would execute, or a `logs/<key>.log` link our next build
    would append to; the sticky bit does not help (it only stops renaming what others made). A
    missing dir is fine: `make_checked_dir` makes it. A link is followed, but must itself be ours
    or root's. `var` is the variable that names the directory, `risk` what a planted entry is.
    """
    try:
        link = os.lstat(root)
        st = os.stat(root) if stat.S_ISLNK(link.st_mode) else link
    except FileNotFoundError:
        return
    except OSError as exc:
        raise UnsafeStateError(f"{root}: cannot be read: {exc.strerror}") from None
    hint = f"set {var} to a directory of your own"
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeStateError(f"{root}: is {fsio.describe_type(st.st_mode)}, not a directory", hint=hint)
    if link is not st:  # the link itself: whoever owns it can point it elsewhere
        fsio.refuse_others(link, f"{root} (a link)", sticky_ok=False, risk=f"plant {risk}", owner_hint=hint)
    fsio.refuse_others(st, root, sticky_ok=False, risk=f"plant {risk}", owner_hint=hint,
                       mode_hint=f"chmod go-w {root} (a cache to share is built by root and only read by others), or {hint}")  # fmt: skip


def make_checked_dir(
    path: Path, var: str = "MLKIT_ENV_DIR", risk: str = ENV_DIR_RISK, mode: int = 0o755
) -> Path:
    """`path`, made when missing (`mode`, whatever the umask), then checked (`check_root`)."""
    if not os.path.lexists(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, mode)
    check_root(path, var, risk)
    return path


def make_root() -> Path:
    """The env dir, made when missing (0755 whatever the umask: see `check_root`)."""
    return make_checked_dir(env_root())


def make_subdir(name: str) -> Path:
    """`.locks` or `logs` in the env dir, made 0755 (others must not plant links there either)."""
    path = make_root() / name
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o755)
    return path


def env_path(key: str) -> Path:
    return env_root() / key


def lock_path(key: str) -> Path:
    return env_root() / ".locks" / f"{key}.lock"


def log_path(key: str) -> Path:
    return env_root() / "logs" / f"{key}.log"


def use_path(key: str) -> Path:
    """Shared-flocked by every process that runs in the env, for as long as it does (`hold_in_use`)."""
    return env_root() / ".locks" / f"{key}.use"


def hold_in_use(key: str) -> IO[bytes] | None:
    """Mark the env `key` in use until the returned file is closed (by the caller, or when the
    process ends): `prune` never deletes an env in use. Best effort: None where the lock cannot be
    taken (a read-only cache whose owner never ran the env: nobody else can prune it anyway)."""
    try:
        try:
            fd = fsio.open_file(use_path(key))  # read-only is enough for a shared flock
        except FileNotFoundError:
            fd = fsio.open_file(make_subdir(".locks") / f"{key}.use", write=True, create=True, mode=0o644)
    except (MlkitError, OSError):
        return None
    # only prune takes it exclusively (without waiting), for as long as it deletes the env: then
    # the marker is gone and the caller builds it again
    try:
        fsio.wait_lock(fd, shared=True, wait=USE_WAIT_S, what=f"environment {key}",
                       hint="mlkit env prune is deleting it; retry when it is done")  # fmt: skip
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


USE_WAIT_S = 600.0  # the longest a run waits for a prune deleting its env (seconds, in practice)


def children_path(key: str) -> Path:
    """Process groups a build started (uv, conda): a dead builder's leftovers are killed by the next."""
    return env_root() / ".locks" / f"{key}.children"


def kill_orphans(key: str, env: Path) -> list[int]:
    """Kill the process groups a killed build left running, if they still work on `env`.

    Each build command runs in its own session, so SIGKILL of the builder leaves it running; it
    must not keep writing into the directory the next build is about to create. A PID is only
    trusted when its command line still names the env path (so a reused PID is never killed).
    """
    killed: list[int] = []
    try:
        pids = [int(x) for x in children_path(key).read_text().split() if x.isdigit()]
    except OSError:
        return killed
    for pid in pids:
        args = procid.cmdline_of(pid)
        if args is None:
            continue
        if str(env) in " ".join(args):
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
                killed.append(pid)
    with contextlib.suppress(OSError):
        children_path(key).unlink()
    return killed


MAX_MARKER_BYTES = 1 << 20
_MARKER_FIELDS: dict[str, type | tuple[type, ...]] = {
    "python": str, "python_version": str, "project": str, "source": str, "hash": str, "manager": str,
    "created": (int, float),
}  # fmt: skip
_MARKER_REQUIRED = ("created", "hash", "manager")  # every build writes them


def read_marker(path: Path) -> dict | None:
    """The env's marker, or None (an incomplete env: rebuilt, pruned) when there is none that holds:
    not a regular file (a FIFO is not waited on, a link not followed), over 1 MiB, not a JSON
    object, or a field mlkit reads missing or of the wrong type."""
    try:
        fd = fsio.open_file(path / MARKER)
    except (MlkitError, OSError):
        return None
    try:
        with os.fdopen(os.dup(fd), "rb") as fh:
            doc = json.loads(fh.read(MAX_MARKER_BYTES + 1))
    except (OSError, ValueError, RecursionError):
        return None
    finally:
        os.close(fd)
    if not isinstance(doc, dict):
        return None
    for name, kind in _MARKER_FIELDS.items():
        if (doc.get(name) is not None or name in _MARKER_REQUIRED) and not isinstance(doc.get(name), kind):
            return None
    return doc


def write_marker(path: Path, info: dict) -> None:
    fsio.atomic_write(path / MARKER, json.dumps(info, indent=2, sort_keys=True), error=EnvBuildError)
    touch_last_used(path)


RUNTIME_DIR = ".mlkit-runtime"  # mlkit inside the env (mlkit.env.uv.install_runtime)


def link_runtime(path: Path) -> None:
    """Point `<env>/.mlkit-runtime/mlkit` at the mlkit package running now, if it points elsewhere:
    the install that built the env may have been removed since (or another one runs it now), and
    the env's `import mlkit` must be this one. Atomic (a link renamed over the old one); a no-op
    for an env without the runtime (a conda env without python) or one we may not write."""
    runtime = path / RUNTIME_DIR
    package = str(Path(__file__).resolve().parent.parent)
    with contextlib.suppress(OSError):
        if os.readlink(runtime / "mlkit") == package:
            return
    if not runtime.is_dir():
        return
    tmp = runtime / f".mlkit.{os.getpid()}.{time.monotonic_ns()}.tmp"
    try:
        os.symlink(package, tmp, target_is_directory=True)
        os.replace(tmp, runtime / "mlkit")
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def touch_last_used(path: Path) -> None:
    stamp = path / LAST_USED
    try:
        stamp.touch()
        os.utime(stamp)
    except OSError:
        pass  # a read-only shared cache is still usable


def last_used(path: Path) -> float:
    for name in (LAST_USED, MARKER):
        with contextlib.suppress(OSError):
            return (path / name).stat().st_mtime
    return path.stat().st_mtime


@contextlib.contextmanager
def build_lock(key: str, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Exclusive per-key lock (flock: released by the kernel when the holder dies), waited for as
    long as the build it waits for takes; `on_wait` hears who builds, then every 30 s."""
    path = _lock_dir(key)
    with fsio.locked(
        path,
        wait=math.inf,
        what=f"environment {key} (another mlkit process is building it)",
        hint="",
        mode=0o644,
        on_wait=on_wait,
    ) as fd:
        os.ftruncate(fd, 0)
        fsio.write_all(fd, f"{os.getpid()}\n".encode())
        yield


def is_locked(key: str) -> bool:
    """True while some process holds the build lock of `key`."""
    try:
        fd = fsio.open_file(lock_path(key))
    except FileNotFoundError:
        return False
    try:
        if not fsio.try_lock(fd):
            return True
    finally:
        os.close(fd)  # closing releases the flock
    return False


def _lock_dir(key: str) -> Path:
    """The lock file's path, its directory made."""
    return make_subdir(".locks") / f"{key}.lock"


def remove_tree(path: Path) -> None:
    """Delete a directory, first renaming it aside so nobody sees it half-deleted."""
    if path.is_symlink():  # never followed: only the link goes
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    if not path.exists():
        return
    aside = path.with_name(f".trash-{path.name}-{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.replace(path, aside)
    except OSError:
        aside = path
    shutil.rmtree(aside, ignore_errors=True)


def dir_size(path: Path) -> int:
    total = 0
    seen: set[tuple[int, int]] = set()
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


@dataclass(frozen=True)
class CachedEnv:
    key: str
    hash: str
    manager: str
    path: Path
    size: int
    last_used: float
    created: float
    project: str | None
    source: str | None
    python_version: str | None
    complete: bool


def list_envs(with_size: bool = True) -> list[CachedEnv]:
    root = env_root()
    if not root.is_dir():
        return []
    envs = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or entry.name == "logs" or not entry.is_dir():
            continue
        hash_, _, manager = entry.name.partition("-")
        link = entry.is_symlink()  # not something mlkit makes: never reused, pruned as incomplete
        marker = None if link else read_marker(entry)
        doc = marker or {}
        try:
            used = last_used(entry)
            created = doc.get("created") or entry.stat().st_mtime
            size = dir_size(entry) if with_size and not link else 0
        except OSError:
            continue  # deleted since it was listed (another prune)
        envs.append(
            CachedEnv(
                key=entry.name,
                hash=doc.get("hash") or hash_,
                manager=doc.get("manager") or manager,
                path=entry,
                size=size,
                last_used=used,
                created=float(created),
                project=doc.get("project"),
                source=doc.get("source"),
                python_version=doc.get("python_version"),
                complete=marker is not None,
            )
        )
    return envs


@dataclass(frozen=True)
class PruneResult:
    removed: list[CachedEnv]
    skipped_locked: list[CachedEnv]
    bytes_freed: int
    dry_run: bool
    skipped_in_use: list[CachedEnv]


def prune(older_than_s: float, *, dry_run: bool = False, now: float | None = None) -> PruneResult:
    """Remove envs not used for `older_than_s` seconds (and dead half-built ones).

    An env whose build lock is held (a build in progress) is never touched, nor one a run is
    using (`hold_in_use`): both locks are taken without waiting before deleting, and held while
    deleting.
    """
    now = time.time() if now is None else now
    removed: list[CachedEnv] = []
    skipped: list[CachedEnv] = []
    in_use: list[CachedEnv] = []
    freed = 0
    for env in list_envs():
        if env.complete and now - env.last_used < older_than_s:
            continue
        fd = _try_lock(env.key) if not dry_run else (None if is_locked(env.key) else -1)
        if fd is None:
            skipped.append(env)
            continue
        try:
            use_fd = _try_lock_use(env.key, create=not dry_run)
            if use_fd is False:
                in_use.append(env)
                continue
            try:
                if read_marker(env.path) is not None and now - last_used(env.path) < older_than_s:
                    continue  # used since we listed it
                if not dry_run:
                    remove_tree(env.path)
                    with contextlib.suppress(OSError):
                        log_path(env.key).unlink()
                removed.append(env)
                freed += env.size
            finally:
                if use_fd is not None and use_fd is not False:
                    os.close(use_fd)
        finally:
            if fd >= 0:
                os.close(fd)
    freed += _remove_dead_trash(dry_run)
    return PruneResult(removed, skipped, freed, dry_run, in_use)


def _try_lock_use(key: str, create: bool) -> int | None | bool:
    """The in-use lock of `key`, taken exclusively without waiting: its fd (made when `create`, so
    that a run starting now waits for the deletion instead of using the env it deletes); None when
    there is no such file and not `create` (no run ever marked the env in use); False when a run
    holds it."""
    try:
        fd = fsio.open_file(use_path(key), write=create, create=create, mode=0o644)
    except FileNotFoundError:
        return None
    except (MlkitError, OSError):
        return False  # a lock we cannot check: keep the env
    if not fsio.try_lock(fd):
        os.close(fd)
        return False
    return fd


def _remove_dead_trash(dry_run: bool) -> int:
    """Remove what `remove_tree` set aside (`.trash-<key>-<pid>-<n>`) and did not finish deleting
    because its process was killed (hidden from `list_envs`, it would take its space for ever); a
    deletion whose process lives is left to it. Returns the bytes freed."""
    freed = 0
    for entry in env_root().glob(".trash-*"):
        pid = entry.name.rsplit("-", 2)[-2] if entry.name.count("-") >= 3 else ""
        if not pid.isdigit() or procid.start_time(int(pid)) is not None:
            continue
        link = entry.is_symlink()
        freed += 0 if link else dir_size(entry)
        if not dry_run:
            if link:
                with contextlib.suppress(OSError):
                    entry.unlink()
            else:
                shutil.rmtree(entry, ignore_errors=True)
    return freed


def _try_lock(key: str) -> int | None:
    fd = fsio.open_file(_lock_dir(key), write=True, create=True, mode=0o644)
    if not fsio.try_lock(fd):
        os.close(fd)
        return None
    return fd


class BuildLog:
    """Appends a build's commands and their output to `<env_dir>/logs/<key>.log`."""

    def __init__(self, key: str, progress: Callable[[str], None] | None = None):
        self.key = key
        self.path = make_subdir("logs") / f"{key}.log"
        self.progress = progress
        self._fh = self.path.open("a", encoding="utf-8")

    def write(self, text: str) -> None:
        """Best effort: a log the full disk cannot take must not hide the build's own error."""
        with contextlib.suppress(OSError, ValueError):
            self._fh.write(text if text.endswith("\n") else text + "\n")
            self._fh.flush()

    def step(self, text: str) -> None:
        self.write(f"--- {time.strftime('%H:%M:%S')} {text}")
        if self.progress is not None:
            self.progress(text)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._fh.close()  # what a full disk did not take is lost; the build's error says why
        with contextlib.suppress(OSError):
            children_path(self.key).unlink()

    def run(self, argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
        """Run a command, its output into the log; raises CommandFailed with the output's tail."""
        self.write("$ " + procs.describe(argv))
        overrides = None if env is None else {**{k: None for k in os.environ if k not in env}, **env}
        child = procs.spawn(
            argv,
            env=overrides,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        children = children_path(self.key)
        with children.open("a", encoding="utf-8") as fh:
            fh.write(f"{child.pid}\n")
        try:
            raw, _ = child.communicate()
        except BaseException:
            procs.terminate_group(child)
            raise
        output = raw.decode("utf-8", errors="replace")
        self.write(output)
        if child.returncode != 0:
            raise CommandFailed(argv, child.returncode, output)
        return output


def disk_full(what: str, log: Path) -> EnvBuildError:
    """The one-line error of a build that ran out of space."""
    return EnvBuildError(
        f"{what}: the disk is full",
        hint=f"free space on the filesystem that holds {env_root()} (or set MLKIT_ENV_DIR to another); "
        f"build log: {log}",
    )


class CommandFailed(Exception):
    def __init__(self, argv: list[str], code: int, output: str):
        super().__init__(f"{os.path.basename(argv[0])} exited with {code}")
        self.argv = argv
        self.code = code
        self.output = output

    @property
    def disk_full(self) -> bool:
        """Did the command fail for want of space (its own words, as uv and conda write them)?"""
        low = self.output.lower()
        return any(t in low for t in ("no space left on device", "os error 28", "disk quota exceeded"))

    def last_error_line(self) -> str:
        lines = [ln.strip() for ln in self.output.splitlines() if ln.strip()]
        for ln in lines:
            low = ln.lower()
            if low.startswith(("error", "×", "x ")) or "error:" in low:
                return _clean(ln)
        return _clean(lines[-1]) if lines else str(self)


def _clean(line: str) -> str:
    return line.lstrip("×x╰─▶ ").strip()
