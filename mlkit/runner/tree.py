"""The run's process tree: every process the entry point started (its group, and what was
orphaned to the supervisor, a child subreaper), signalled together, and stopped with SIGKILL after a
grace period."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading

from mlkit import proc as proc_mod
from mlkit import procid


def become_subreaper() -> None:
    """Orphans of the child (double forks, torchrun workers whose agent died) reparent to us,
    not to init, so they can still be found and stopped. Linux only; elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    # import budget: ctypes loads only when becoming a subreaper
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def _descendants() -> list[int]:
    """Every process below this one (cheap on Linux: no scan of all of /proc)."""
    if procid.children_of(os.getpid()) is None:
        # import budget: psutil only where /proc lists no children; a plain run on Linux skips it
        import psutil

        try:
            return [p.pid for p in psutil.Process().children(recursive=True)]
        except psutil.Error:
            return []
    return procid.descendants_of(os.getpid())


def _living(pid: int) -> bool:
    """Alive and not a zombie."""
    return procid.start_time(pid) is not None


class RunTree:
    """Every process the run started: the child, its group, and every descendant of the supervisor
    that was not there before the child started.

    The supervisor is a child subreaper, so whatever the run starts stays its descendant: ranks in
    sessions of their own (torchrun), `setsid` and double-forked daemons, processes that cleared
    their environment (`env -i`). Processes that were our descendants before the run (`before`,
    by pid and start time) are not the run's and are left alone.
    """

    def __init__(self, child: subprocess.Popen[bytes], run_id: str, before: set[procid.ProcessRef]):
        self.child = child
        self.pgid = child.pid
        self.run_id = run_id
        self.before = before

    def members(self) -> list[int]:
        found = []
        for pid in _descendants():
            if pid == self.child.pid or not _existed(pid, self.before):
                found.append(pid)
        return found

    def signal(self, sig: int) -> None:
        """`sig` to the group and to every member outside it (torchrun's workers have their own)."""
        members = self.members()
        proc_mod.signal_group(self.pgid, sig)
        for pid in members:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)

    def alive(self) -> bool:
        """True while a process of the group, or a non-zombie member outside it, is left."""
        self.reap()
        if proc_mod.group_alive(self.pgid):
            return True
        return any(pid != self.child.pid and _living(pid) for pid in self.members())

    def reap(self) -> None:
        """Collect the exit status of members that were reparented to us (we are a subreaper)."""
        mine = set(procid.children_of(os.getpid()) or [])
        for pid in self.members():
            if pid != self.child.pid and pid in mine and not _living(pid):
                with contextlib.suppress(OSError):
                    os.waitpid(pid, os.WNOHANG)


def _existed(pid: int, before: set[procid.ProcessRef]) -> bool:
    return any(ref.pid == pid and procid.is_same(ref) for ref in before)


def snapshot() -> set[procid.ProcessRef]:
    """Our descendants now (pid + start time): not the run's processes."""
    return {procid.ProcessRef(pid, procid.start_time(pid)) for pid in _descendants()}


class Stopper:
    """Stops the child: the signal to the group, SIGKILL after the grace period; at most once each."""

    def __init__(self, tree: RunTree, grace: float):
        self.tree = tree
        self.grace = grace
        self.reason: str | None = None  # "signal" or "timeout"
        self.signum: int | None = None
        self.hard = False
        self._lock = threading.RLock()
        self._timer: threading.Timer | None = None

    def stop(self, signum: int, reason: str) -> None:
        with self._lock:
            if self.reason is not None:  # a second signal: no more waiting
                self.kill()
                return
            self.reason, self.signum = reason, signum
            self.tree.signal(signum)
            self._timer = threading.Timer(self.grace, self.kill)
            self._timer.daemon = True
            self._timer.start()

    def kill(self) -> None:
        with self._lock:
            self.hard = True
            self.tree.signal(signal.SIGKILL)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
