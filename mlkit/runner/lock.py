"""Named run locks (`mlkit run --lock NAME`): one holder per name on this host, via flock(2).

The lock file lives in `settings.host_state_dir()/locks/<name>.lock`, shared by every user of the
host. It is opened through mlkit.fsio relative to the checked state dir and `locks/` descriptors:
no link is followed, nothing blocks on a FIFO, another user's planted file is refused (docs/gpus.md,
"Shared state"). The kernel drops a flock when its holder dies, however it dies, so a lock is never
left behind by a crashed or SIGKILLed run. The holder writes who it is (pid, host, user, start time,
run id) into the file so a contender can say which run holds it; who holds it comes from the kernel
(/proc/locks), so a holder that wrote nothing (or something else) is named too.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mlkit import fsio, settings
from mlkit.errors import LockedError, UsageError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass
class RunLock:
    """A held lock: its name and file; `set_run_id` records the run it guards for other waiters."""

    name: str
    path: Path
    fd: int
    since: float
    run_id: str | None = None

    def set_run_id(self, run_id: str) -> None:
        """Record the run this lock guards, so a contender's message names it."""
        self.run_id = run_id
        _write_holder(self)


def lock_path(name: str) -> Path:
    """The lock file for `name` (the name is validated: no path characters)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UsageError(
            f"--lock {name!r}: a lock name may hold only letters, digits, '.', '_' and '-' (at most 100, not starting with '.' or '-')",
            hint="e.g. --lock nightly-train",
        )
    return settings.host_state_dir() / settings.LOCKS_DIR / f"{name}.lock"


def _open(path: Path) -> int:
    """Open (creating) the lock file at `path` through the checked state dir and `locks/`."""
    state_fd = settings.open_state_dir()
    try:
        mode = settings.state_file_mode(state_fd)
        locks_fd = fsio.open_dir(
            settings.LOCKS_DIR, dir_fd=state_fd, create=True, shared=mode == 0o666, display=path.parent
        )
    finally:
        os.close(state_fd)
    try:
        mode = settings.state_file_mode(locks_fd)
        return fsio.open_file(
            path.name, dir_fd=locks_fd, write=True, create=True, mode=mode, other_owners=True, display=path
        )
    finally:
        os.close(locks_fd)


def _write_holder(lock: RunLock) -> None:
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "user": _user(),
        "since": lock.since,
        "run_id": lock.run_id,
    }
    data = (json.dumps(info) + "\n").encode()
    os.pwrite(lock.fd, data, 0)  # one write of one line; readers parse only the first line
    os.ftruncate(lock.fd, len(data))


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def describe_holder(fd: int) -> str:
    """One line about who holds the lock open at `fd`: the kernel's holder (/proc/locks), with the
    run and start time the holder wrote into the file when that is the same process."""
    kernel = fsio.lock_holder(fd)
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8", errors="replace").split("\n", 1)[0])
        pid = int(info["pid"])
        since = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(float(info.get("since", 0))))
    except (OSError, ValueError, TypeError, KeyError, OverflowError):
        return kernel or "another process (it has not written its details yet)"
    if kernel is not None and kernel.split()[:2] != ["pid", str(pid)]:
        return kernel  # what the file says is stale, or not the holder's own
    run = f" (run {info['run_id']})" if isinstance(info.get("run_id"), str) else ""
    host = info.get("host")
    host = f" on {host}" if isinstance(host, str) and host != socket.gethostname() else ""
    user = info.get("user")
    user = f" of user {user}" if isinstance(user, str) and user != _user() else ""
    return f"pid {pid}{host}{user}{run} since {since}"


@contextlib.contextmanager
def run_lock(
    name: str, *, wait: float | None = None, on_wait: Callable[[str], None] | None = None
) -> Iterator[RunLock]:
    """Hold the host-wide lock `name` for the block; LockedError if a live process holds it.

    `wait` (seconds, may be `math.inf`) waits for the holder to finish instead of failing at once;
    `on_wait` gets a one-line status when the wait starts and every 30 s after.
    """
    path = lock_path(name)
    fd = _open(path)
    try:
        _wait_for(fd, name, wait, on_wait)
        lock = RunLock(name, path, fd, time.time())
        _write_holder(lock)
        try:
            yield lock
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # the details go first, then closing releases the lock
    finally:
        os.close(fd)


def _wait_for(fd: int, name: str, wait: float | None, on_wait: Callable[[str], None] | None) -> None:
    wait = wait if wait and wait > 0 else 0.0
    try:
        fsio.wait_lock(
            fd,
            wait=wait,
            what=f"lock {name!r}",
            hint="wait for that run to finish, or pass --lock-wait DURATION (e.g. 30m) to wait for it (a dead holder's lock is freed by itself)",
            on_wait=on_wait,
            describe=lambda: describe_holder(fd),
        )
    except LockedError:
        if not wait:
            raise
        raise LockedError(
            f"lock {name!r} is still held by {describe_holder(fd)} after waiting {wait:g}s",
            hint="raise --lock-wait, or check why the run holding the lock takes so long",
        ) from None
