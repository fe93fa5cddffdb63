"""Named run locks (`mlkit run --lock NAME`): one holder per name on this host, via flock(2).

The lock file lives in `settings.host_state_dir()/locks/<name>.lock`, shared by every user of the
host. The kernel drops a flock when its holder dies, however it dies, so a lock is never left
behind by a crashed or SIGKILLed run. The holder writes who it is (pid, host, user, start time,
run id) into the file so a contender can say who holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mlkit import settings
from mlkit.errors import LockedError, UsageError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_POLL_S = 0.2
_STATUS_EVERY_S = 30.0


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
    root = settings.ensure_shared_dir(settings.host_state_dir())
    return settings.ensure_shared_dir(root / "locks") / f"{name}.lock"


def _open(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    with contextlib.suppress(OSError):  # not ours (another user made it): they made it 0666 already
        if os.fstat(fd).st_uid == os.getuid():
            os.fchmod(fd, 0o666)
    return fd


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


def describe_holder(path: Path) -> str:
    """One line about who holds the lock at `path`, from what the holder wrote into it."""
    try:
        first = path.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0]
        info = json.loads(first)
    except (OSError, ValueError):
        return "another process (it has not written its details yet)"
    since = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(float(info.get("since", 0))))
    run = f" (run {info['run_id']})" if info.get("run_id") else ""
    host = f" on {info['host']}" if info.get("host") and info["host"] != socket.gethostname() else ""
    user = f" of user {info['user']}" if info.get("user") and info["user"] != _user() else ""
    return f"pid {info.get('pid', '?')}{host}{user}{run} since {since}"


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


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
        if not _try_lock(fd):
            _wait_for(fd, name, path, wait, on_wait)
        lock = RunLock(name, path, fd, time.time())
        _write_holder(lock)
        try:
            yield lock
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _wait_for(
    fd: int, name: str, path: Path, wait: float | None, on_wait: Callable[[str], None] | None
) -> None:
    hint = "wait for that run to finish, or pass --lock-wait DURATION (e.g. 30m) to wait for it (a dead holder's lock is freed by itself)"
    if not wait or wait <= 0:
        raise LockedError(f"lock {name!r} is held by {describe_holder(path)}", hint=hint)
    start = time.monotonic()
    next_status = start
    while True:
        now = time.monotonic()
        if now - start >= wait:
            raise LockedError(
                f"lock {name!r} is still held by {describe_holder(path)} after waiting {wait:g}s",
                hint="raise --lock-wait, or check why the run holding the lock takes so long",
            )
        if on_wait is not None and now >= next_status:
            left = "" if wait == float("inf") else f", up to {wait - (now - start):.0f}s more"
            on_wait(f"waiting for lock {name!r}, held by {describe_holder(path)}{left}")
            next_status = now + _STATUS_EVERY_S
        time.sleep(min(_POLL_S, max(0.0, wait - (now - start))))
        if _try_lock(fd):
            return
