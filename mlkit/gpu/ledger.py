"""The host's GPU lease ledger: which mlkit run holds which GPU, shared by every mlkit process.

`<host_state_dir>/gpu-leases.json` (mode 0666 in a 1777 directory, so every user's runs see the
same leases), guarded by an `fcntl.flock` on `gpu-leases.lock`. A lease names the GPU UUID, the
run id, the supervisor's pid and that pid's start time, the host and when it began. A lease whose
process is gone (or whose pid now belongs to a process started at another time) is dropped on
every read, so a SIGKILLed supervisor never strands a GPU.

`reserve()` = lock, read leases, probe, select excluding leased GPUs, write, unlock. Runs started
in the same second therefore never share a GPU. With `wait`, the run joins the ledger's wait queue
(`waiters`, mlkit.gpu.queue) and polls (every MLKIT_GPU_POLL_INTERVAL s, default 2, with jitter)
until the request can be met; runs that have waited longer are served first. A waiter whose
process is gone is dropped like a dead lease.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlkit import settings
from mlkit.errors import GpuUnavailableError, GpuWaitTimeoutError
from mlkit.gpu.queue import Waiter, holds
from mlkit.gpu.select import GpuRequest, Selection, cuda_env, select

if TYPE_CHECKING:  # the probe (and NVML) is loaded only when GPUs are asked for
    from mlkit.gpu.devices import GpuInfo, GpuReport

LEDGER_FILE = "gpu-leases.json"
LOCK_FILE = "gpu-leases.lock"
POLL_ENV = "MLKIT_GPU_POLL_INTERVAL"
_START_TOLERANCE_S = 1.0  # psutil create_time is derived from boot time + jiffies: allow drift


@dataclass
class Lease:
    """One GPU held by one run."""

    uuid: str
    run_id: str
    pid: int  # the supervisor (mlkit run) that holds it
    pid_start: float | None  # that pid's start time, epoch s: a reused pid is not the owner
    host: str
    since: float  # epoch s
    user: str | None = None

    @property
    def is_local(self) -> bool:
        return _on_this_host(self.host)


def _on_this_host(host: str) -> bool:
    import socket

    return host == socket.gethostname()


def ledger_path() -> Path:
    return settings.host_state_dir() / LEDGER_FILE


def process_start_time(pid: int) -> float | None:
    """A process's start time (epoch s), None if it does not exist."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        return None


def lease_alive(lease: Lease | Waiter) -> bool:
    """Is the lease's (or waiter's) owner still running? Other hosts' are trusted (shared state dirs)."""
    if not _on_this_host(lease.host):
        return True
    import psutil

    try:
        proc = psutil.Process(lease.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        started = proc.create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # another user's live process
        return True
    if lease.pid_start is None:
        return True
    return abs(started - lease.pid_start) <= _START_TOLERANCE_S


@contextlib.contextmanager
def locked() -> Iterator[Path]:
    """Hold the ledger's exclusive file lock; yields the ledger's path."""
    directory = settings.ensure_shared_dir(settings.host_state_dir())
    lock_path = directory / LOCK_FILE
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        _share(lock_path)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield directory / LEDGER_FILE
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _share(path: Path) -> None:
    """Mode 0666 so other users' mlkit can use the file (umask would take it away)."""
    try:
        if path.stat().st_mode & 0o777 != 0o666:
            path.chmod(0o666)
    except OSError:  # another user's file: they already made it shared
        pass


def _load(path: Path) -> tuple[list[Lease], list[Waiter]]:
    """The leases and the wait queue (oldest first)."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return [], []
    try:
        data = json.loads(raw) if raw.strip() else {}
        leases = [Lease(**item) for item in data.get("leases", [])]
        waiters = [Waiter(**item) for item in data.get("waiters", [])]
    except (ValueError, TypeError, AttributeError):
        # A torn in-place write (see _store); the kernel released the dead writer's lock. Starting
        # empty is the only way forward; live runs' GPUs are still guarded by their processes,
        # and waiting runs re-join the queue on their next poll.
        return [], []
    return leases, sorted(waiters, key=lambda w: w.since)


def _store(path: Path, leases: list[Lease], waiters: list[Waiter] | tuple[()] = ()) -> None:
    """Write atomically: a temp file renamed over the ledger. In a sticky directory another user's
    ledger cannot be renamed over; then rewrite it in place (we hold the lock)."""
    state = {"version": 1, "leases": [asdict(lease) for lease in leases]}
    if waiters:
        state["waiters"] = [asdict(waiter) for waiter in waiters]
    payload = json.dumps(state, indent=1) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=".gpu-leases.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(payload)
        os.chmod(tmp, 0o666)
        try:
            os.replace(tmp, path)
            return
        except PermissionError:
            pass
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    with open(path, "r+", encoding="utf-8") as fh:
        fh.truncate(0)
        fh.write(payload)


def _live(path: Path) -> tuple[list[Lease], list[Waiter]]:
    """Read under the lock, dropping (and writing back) leases and waiters whose owner is gone."""
    leases, waiters = _load(path)
    alive = [lease for lease in leases if lease_alive(lease)]
    waiting = [waiter for waiter in waiters if lease_alive(waiter)]
    if len(alive) != len(leases) or len(waiting) != len(waiters):
        _store(path, alive, waiting)
    return alive, waiting


def read_leases() -> list[Lease]:
    """The live leases on this host (dead owners' leases are reclaimed on the way)."""
    if not settings.host_state_dir().exists():
        return []
    with locked() as path:
        return _live(path)[0]


def read_state() -> tuple[list[Lease], list[Waiter]]:
    """The live leases and the runs waiting for GPUs (oldest first) on this host."""
    if not settings.host_state_dir().exists():
        return [], []
    with locked() as path:
        return _live(path)


def leased_run_ids() -> set[str]:
    """Run ids that hold a GPU lease now (gc never touches them)."""
    return {lease.run_id for lease in read_leases()}


@dataclass
class GpuLease:
    """The GPUs a run holds. Release it when the run ends (or use it as a context manager)."""

    gpus: list[GpuInfo] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    notice: str | None = None
    run_id: str | None = None
    owner_pid: int | None = None
    released: bool = False

    @property
    def uuids(self) -> list[str]:
        return [gpu.uuid for gpu in self.gpus]

    def release(self) -> None:
        """Give the GPUs back. Idempotent; a no-op for a CPU lease."""
        if self.released:
            return
        self.released = True
        if not self.gpus:
            return
        mine = set(self.uuids)
        with locked() as path:
            leases, waiters = _load(path)
            kept = [
                lease
                for lease in leases
                if not (lease.uuid in mine and lease.run_id == self.run_id and lease.pid == self.owner_pid)
            ]
            if len(kept) != len(leases):
                _store(path, kept, waiters)

    def __enter__(self) -> GpuLease:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def lease_tags(gpus: list[GpuInfo], report: GpuReport | None) -> dict[str, str]:
    """`mlkit.gpu.*` tags for the run record."""
    tags = {"mlkit.gpu.count": str(len(gpus)), "mlkit.gpu.uuids": ",".join(g.uuid for g in gpus)}
    for i, gpu in enumerate(gpus):
        for key, value in (
            ("name", gpu.name),
            ("uuid", gpu.uuid),
            ("index", gpu.index),
            ("memory_total", gpu.memory_total),
            ("compute_capability", gpu.compute_capability),
            ("mig_parent_uuid", gpu.parent_uuid),
        ):
            if value is not None:
                tags[f"mlkit.gpu.{i}.{key}"] = str(value)
    if report is None:  # no probe was made (--gpus none)
        return tags
    if report.driver_version:
        tags["mlkit.gpu.driver_version"] = report.driver_version
    if report.cuda_version:
        tags["mlkit.gpu.cuda_version"] = report.cuda_version
    return tags


def poll_interval() -> float:
    try:
        return max(0.01, float(os.environ.get(POLL_ENV, "2")))
    except ValueError:
        return 2.0


def reserve(
    request: GpuRequest,
    *,
    run_id: str,
    owner_pid: int,
    wait: float | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> GpuLease:
    """Lease GPUs for `run_id`, held by process `owner_pid` (the supervisor).

    `wait`: seconds to wait for the request to become satisfiable (None/0: don't wait; math.inf:
    forever). Raises GpuUnavailableError (no wait, or waiting cannot help: no such GPUs) or
    GpuWaitTimeoutError. `on_wait(msg)` hears what it is waiting for whenever that changes.
    """
    if request.kind == "none":
        return GpuLease(env=cuda_env([]), tags=lease_tags([], None), run_id=run_id, owner_pid=owner_pid)
    import socket

    from mlkit.gpu.devices import probe

    started = time.monotonic()
    deadline = started + wait if wait else None
    pid_start = process_start_time(owner_pid)
    host, user = socket.gethostname(), _user()
    queued = False  # in the ledger's wait queue (removed again however this ends)
    since: float | None = None  # when we joined it: our place in it
    last_message = None
    try:
        while True:
            with locked() as path:
                leases, waiters = _live(path)
                place = next((i for i, w in enumerate(waiters) if _is(w, run_id, owner_pid)), len(waiters))
                report = probe(leases=leases)
                taken = {lease.uuid: lease.run_id for lease in leases}
                held = holds(report, waiters[:place], taken)  # for the runs that have waited longer
                selection = select(report, request, {**taken, **held})
                if selection.ok:
                    now = time.time()
                    new = [
                        Lease(g.uuid, run_id, owner_pid, pid_start, host, now, user) for g in selection.gpus
                    ]
                    if new or queued:
                        _store(path, leases + new, [w for w in waiters if not _is(w, run_id, owner_pid)])
                    queued = False
                    return GpuLease(
                        gpus=selection.gpus,
                        env=cuda_env(selection.gpus),
                        tags=lease_tags(selection.gpus, report),
                        notice=selection.notice,
                        run_id=run_id,
                        owner_pid=owner_pid,
                    )
                if not selection.fatal and deadline is not None and place == len(waiters):
                    # join the queue (or re-join it, in our old place, if a torn ledger lost it)
                    since = since or time.time()
                    waiter = Waiter.of(
                        request, run_id=run_id, pid=owner_pid, pid_start=pid_start, host=host,
                        since=since, user=user,
                    )  # fmt: skip
                    _store(path, leases, sorted([*waiters, waiter], key=lambda w: w.since))
                    queued = True
            if selection.fatal or deadline is None:
                raise GpuUnavailableError(selection.message or "no GPU available", hint=selection.hint)
            now = time.monotonic()
            if now >= deadline:
                raise _timeout(request, selection, wait, now - started)
            message = f"waiting for {request.describe()}: {selection.why}"
            if on_wait is not None and message != last_message:
                with contextlib.suppress(Exception):  # a broken callback must not break the wait
                    on_wait(message)
            last_message = message
            interval = poll_interval() * random.uniform(0.75, 1.25)
            time.sleep(max(0.0, min(interval, deadline - now)))
    finally:
        if queued:  # gave up, timed out or was interrupted: leave the queue
            with locked() as path:
                leases, waiters = _load(path)
                _store(path, leases, [w for w in waiters if not _is(w, run_id, owner_pid)])


def _is(waiter: Waiter, run_id: str, pid: int) -> bool:
    return waiter.run_id == run_id and waiter.pid == pid


def _timeout(
    request: GpuRequest, selection: Selection, wait: float | None, waited: float
) -> GpuWaitTimeoutError:
    limit = "forever" if wait is None or math.isinf(wait) else f"{wait:g}s"
    return GpuWaitTimeoutError(
        f"--wait {limit}: gave up after {waited:.0f}s waiting for {request.describe()}: {selection.why}",
        hint="wait longer (--wait 2h), ask for fewer GPUs, or see who holds them with `mlkit gpus`",
    )


def _user() -> str | None:
    try:
        import getpass

        return getpass.getuser()
    except (KeyError, OSError):
        return None
