"""Process identity: is the process that took a lease, a lock or a run still the same live process?

A pid alone is not an identity: pids are reused. A process is named by its pid *and* its start
time (epoch seconds, computed the way psutil's `create_time()` does: boot time + start ticks from
`/proc/<pid>/stat`), and it is "the same process" only while both match. This is the one place
that reads them; the GPU ledger, lost-run detection, run provenance and the environment cache all
use it.

Linux `/proc` is read directly (cheap, no psutil import on `mlkit run`'s path); elsewhere psutil
answers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

HIDDEN = -1.0  # start_time() of a live process whose details this user may not read
START_TOLERANCE_S = 1.0  # boot time + jiffies drifts a little between readers

_btime: float | None = None


@dataclass(frozen=True)
class ProcessRef:
    """A process as recorded by whoever started or saw it: pid + start time (None: unknown)."""

    pid: int
    start: float | None


def _boot_time() -> float:
    global _btime
    if _btime is None:
        with open("/proc/stat", "rb") as f:
            _btime = float(next(int(line.split()[1]) for line in f if line.startswith(b"btime")))
    return _btime


def _stat_fields(pid: int) -> list[bytes] | Literal[False] | None:
    """Fields of /proc/<pid>/stat after the command name; None when gone; False when /proc cannot tell."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()
    except FileNotFoundError:
        if not os.path.isdir("/proc/self"):
            return False  # no /proc here
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except OSError:
            return False  # alive but hidden (hidepid): psutil decides
        return False  # appeared or ending right now: psutil decides
    except (OSError, IndexError):
        return False


def start_time(pid: int) -> float | None:
    """The start time (epoch s) of live process `pid`; None when it is gone or a zombie;
    `HIDDEN` when it is alive but this user may not look at it."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    fields = _stat_fields(pid)
    if fields is None:
        return None
    if fields is not False:
        if fields[0] in (b"Z", b"X"):
            return None
        try:
            return int(fields[19]) / os.sysconf("SC_CLK_TCK") + _boot_time()
        except (OSError, ValueError, IndexError, StopIteration):
            pass
    # import budget: psutil only where /proc cannot be read (off Linux); mlkit run reads /proc
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except psutil.NoSuchProcess:
        return None
    except psutil.AccessDenied:
        return HIDDEN


def current() -> ProcessRef:
    """This process."""
    pid = os.getpid()
    start = start_time(pid)
    return ProcessRef(pid, None if start is None or start == HIDDEN else start)


def is_same(ref: ProcessRef, *, tolerance: float = START_TOLERANCE_S) -> bool:
    """Is `ref` still the same live process? A reused pid (another start time) is not; a process
    recorded without a start time is taken as alive while its pid lives; a hidden one is alive."""
    start = start_time(ref.pid)
    if start is None:
        return False
    if start == HIDDEN or ref.start is None:
        return True
    return abs(start - ref.start) <= tolerance


def group_of(pid: int) -> int | None:
    """The process group of live process `pid`; None when it is gone, a zombie, or /proc cannot tell."""
    fields = _stat_fields(pid)
    if not fields or fields[0] in (b"Z", b"X"):
        return None
    try:
        return int(fields[2])
    except (ValueError, IndexError):
        return None


def ancestors_of(pid: int) -> list[int]:
    """The parent of `pid`, its parent, ... up to init (nearest first; what /proc can tell)."""
    found: list[int] = []
    while len(found) < 4096:  # a cycle cannot happen; this only bounds a corrupt /proc
        fields = _stat_fields(pid)
        try:
            parent = int(fields[1]) if fields else 0
        except (ValueError, IndexError):
            parent = 0
        if parent <= 0:
            break
        found.append(parent)
        pid = parent
    return found


def uid_of(pid: int) -> int | None:
    """The real uid of live process `pid`, None when gone."""
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def environ_of(pid: int) -> dict[str, str] | None:
    """The environment process `pid` started with; None when gone or not ours to read."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    env: dict[str, str] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def cmdline_of(pid: int) -> list[str] | None:
    """The argv of live process `pid` (readable for every user's processes); None when gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return [arg.decode(errors="replace") for arg in raw.rstrip(b"\0").split(b"\0")] if raw else []


def pids() -> list[int]:
    """Every live pid on this host (as /proc lists them; empty where there is no /proc)."""
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []


def children_of(pid: int) -> list[int] | None:
    """Direct children of `pid` (every thread's /proc children list); None when /proc cannot tell."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    kids: list[int] = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                kids.extend(int(x) for x in f.read().split())
        except (OSError, ValueError):
            continue
    return kids


def descendants_of(pid: int) -> list[int]:
    """Every live descendant of `pid`, parents before children."""
    found: list[int] = []
    seen = {pid}
    todo = [pid]
    while todo:
        for kid in children_of(todo.pop()) or []:
            if kid not in seen:
                seen.add(kid)
                found.append(kid)
                todo.append(kid)
    return found


def hostname() -> str:
    """`socket.gethostname()` without importing socket: on POSIX both are the kernel's nodename."""
    try:
        return os.uname().nodename
    except AttributeError:  # no os.uname (Windows)
        import socket  # import budget: only without os.uname, so socket stays out of `mlkit run`

        return socket.gethostname()


def user_name(uid: int) -> str:
    """A user's login name, or the number when it has none."""
    # import budget: pwd loads only when a uid is named
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
