"""The host's GPU lease ledger: which mlkit run holds which GPU, shared by every mlkit process.

`<host_state_dir>/gpu-leases.json` (mode 0666 in a shared 1777 directory, so every user's runs see
the same leases; 0600 in a private one), guarded by an `flock` on `gpu-leases.lock` that is taken
with a deadline. Both are opened through mlkit.fsio relative to the checked state dir's descriptor:
no link is followed, nothing blocks on a FIFO (docs/gpus.md, "Shared state"). A lease names the GPU UUID, the
run id, the supervisor's pid and that pid's start time, the host and when it began. A lease whose
process is gone (or whose pid now belongs to a process started at another time) is dropped on
every read, so a SIGKILLed supervisor never strands a GPU.

`reserve()` (mlkit.gpu.reserving: a `--gpus none` run never loads this module) = lock, read leases, probe, select excluding leased GPUs, write, unlock. Runs started
in the same second therefore never share a GPU. With `wait`, the run joins the ledger's wait queue
(`waiters`, mlkit.gpu.queue) and polls (every MLKIT_GPU_POLL_INTERVAL s, default 2, with jitter)
until the request can be met; runs that have waited longer are served first. A waiter whose
process is gone is dropped like a dead lease.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from mlkit import fsio, procid, settings
from mlkit.errors import (
    ExitCode,
    GpuUnavailableError,
    GpuWaitTimeoutError,
    LockedError,
    MlkitError,
    NotFoundError,
    UsageError,
)
from mlkit.gpu import trust
from mlkit.gpu.lease import GpuLease, lease_tags  # noqa: F401  # lease_tags: re-exported (tests, gpus CLI)
from mlkit.gpu.queue import holds
from mlkit.gpu.records import Lease, Waiter
from mlkit.gpu.select import GpuRequest, Selection, cuda_env, select

if TYPE_CHECKING:  # the probe (and NVML) is loaded only when GPUs are asked for
    from mlkit.gpu.devices import GpuReport

LEDGER_FILE = "gpu-leases.json"
GPU_HELD_PREFIX = "gpu-held-"  # `gpu-held-<uuid>`: flocked by the live holder of that GPU (_held_by_kernel)
KERNEL_HOLDER = ""  # the run holding such a GPU, unknown: `select` says "leased by another mlkit run"
LOCK_FILE = "gpu-leases.lock"
POLL_ENV = "MLKIT_GPU_POLL_INTERVAL"
LOCK_WAIT_S = 10.0  # the ledger lock's deadline without --wait: `mlkit gpus`, gc, release, --gpus N
_LEAVE_QUEUE_WAIT_S = 1.0  # leaving the wait queue on the way out (a dead waiter is dropped anyway)
_MAX_LEDGER_BYTES = 16 * 1024 * 1024  # read no more than this (a planted huge file is not ours)


_Record = TypeVar("_Record", Lease, Waiter)  # a ledger record: a lease or a waiter


def ledger_path() -> Path:
    return settings.host_state_dir() / LEDGER_FILE


def lease_alive(lease: Lease | Waiter, proof: trust.Proof | None = None) -> bool:
    """Is the lease (or waiter) honoured: its supervisor is the mlkit process that took it, or a
    process of its run lives? Leases naming another host or a process that is not mlkit's are not."""
    return trust.judge(lease, proof or trust.gather(None))[0] == trust.LIVE


@dataclass
class Ledger:
    """The open, checked state dir while the ledger lock is held (what `locked()` yields)."""

    dir_fd: int
    directory: Path
    mode: int  # state files' mode: 0666 in a shared (sticky, world-writable) dir, else 0600

    @property
    def path(self) -> Path:
        return self.directory / LEDGER_FILE


@contextlib.contextmanager
def locked(
    wait: float = LOCK_WAIT_S,
    *,
    error: type[MlkitError] = LockedError,
    why: str = "",
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[Ledger]:
    """Hold the ledger's exclusive file lock, waiting at most `wait` s (then `error`, naming the
    holder, its message starting with `why`). Yields the checked state dir's handle."""
    directory = settings.host_state_dir()
    dir_fd = settings.open_state_dir()
    try:
        mode = settings.state_file_mode(dir_fd)
        lock = directory / LOCK_FILE
        with fsio.locked(
            LOCK_FILE,
            dir_fd=dir_fd,
            mode=mode,
            other_owners=True,  # every user's mlkit takes it
            display=lock,
            wait=wait,
            what=f"{why}the GPU lease ledger's lock {lock}",
            hint="try again later (or with a longer --wait); a holder that is stuck can be stopped by its user or root",
            error=error,
            on_wait=on_wait,
        ):
            yield Ledger(dir_fd, directory, mode)
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def _opened(target: Ledger | Path) -> Iterator[Ledger]:
    """`target` itself, or (a ledger path, as tests pass) its directory opened and checked."""
    if isinstance(target, Ledger):
        yield target
        return
    dir_fd = fsio.open_dir(Path(target).parent)
    try:
        yield Ledger(dir_fd, Path(target).parent, settings.state_file_mode(dir_fd))
    finally:
        os.close(dir_fd)


def _read(ledger: Ledger) -> str:
    """The ledger's text ('' when there is none), read through a checked descriptor: a link, a
    FIFO, a directory or a hard link at its path is refused (UnsafeStateError), never followed."""
    try:
        fd = fsio.open_file(LEDGER_FILE, dir_fd=ledger.dir_fd, other_owners=True, display=ledger.path)
    except FileNotFoundError:
        return ""
    try:
        chunks, size = [], 0
        while size <= _MAX_LEDGER_BYTES and (chunk := os.read(fd, 1 << 20)):
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _load(path: Ledger | Path) -> tuple[list[Lease], list[Waiter]]:
    """The leases and the wait queue (oldest first); bad records dropped with a warning."""
    leases, waiters, _ = _load_checked(path)
    return leases, waiters


def _load_checked(path: Ledger | Path) -> tuple[list[Lease], list[Waiter], bool]:
    """`_load`, and whether the text was a ledger at all (False: garbage, a torn write)."""
    with _opened(path) as ledger:
        raw = _read(ledger)
        where = str(ledger.path)
    # Every record is checked (mlkit.gpu.trust); text that is no ledger gives nothing, and the
    # leases are rebuilt from the live run processes (_survey), never read as "all free".
    leases, waiters, readable = trust.parse(raw, where)
    return leases, sorted(waiters, key=lambda w: w.since), readable


def _store(path: Ledger | Path, leases: list[Lease], waiters: list[Waiter] | tuple[()] = ()) -> None:
    """Write atomically: a temp file in the state dir renamed over the ledger. In a sticky directory
    another user's ledger cannot be renamed over; then rewrite it in place, through a descriptor
    checked like every other (we hold the lock)."""
    state = {"version": 1, "leases": [asdict(lease) for lease in leases]}
    if waiters:
        state["waiters"] = [asdict(waiter) for waiter in waiters]
    payload = (json.dumps(state, indent=1) + "\n").encode("utf-8")
    with _opened(path) as ledger:
        if _can_replace(ledger):
            fsio.atomic_write(
                LEDGER_FILE, payload, mode=ledger.mode, dir_fd=ledger.dir_fd, display=ledger.path
            )
            return
        fd = fsio.open_file(
            LEDGER_FILE,
            dir_fd=ledger.dir_fd,
            write=True,
            mode=ledger.mode,
            other_owners=True,
            display=ledger.path,
        )
        try:
            fsio.write_all(fd, payload)
            os.ftruncate(fd, len(payload))
        except OSError as exc:
            raise fsio.write_error(ledger.path, exc) from exc
        finally:
            os.close(fd)


def _can_replace(ledger: Ledger) -> bool:
    """May we rename over the ledger? Not in a sticky dir when another user owns it and the dir."""
    me = os.geteuid()
    try:
        st = os.stat(LEDGER_FILE, dir_fd=ledger.dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return True
    directory = os.fstat(ledger.dir_fd)
    return me in (0, st.st_uid, directory.st_uid) or not directory.st_mode & stat.S_ISVTX


@dataclass
class Survey:
    """The ledger as judged now: honoured leases and waiters, and the records that are not."""

    leases: list[Lease] = field(default_factory=list)
    waiters: list[Waiter] = field(default_factory=list)
    ignored: list[tuple[Lease | Waiter, str, str]] = field(default_factory=list)  # (record, state, why)


def _survey(path: Ledger | Path) -> Survey:
    """Read under the lock and judge every record (mlkit.gpu.trust): dead ones are dropped, leases
    of live run processes that the ledger lost are put back, foreign and impostor records are kept
    (shown by `mlkit gpus`, cleared by `--release`) but not honoured. Writes back what changed."""
    leases, waiters, readable = _load_checked(path)
    proof = trust.gather(path.dir_fd if isinstance(path, Ledger) else None)
    survey = Survey()
    kept_leases: list[Lease] = []
    kept_waiters: list[Waiter] = []

    def triage(records: list[_Record], live: list[_Record], kept: list[_Record]) -> None:
        for record in records:
            state, why = trust.judge(record, proof)
            if state == trust.LIVE:
                live.append(record)
            elif state == trust.DEAD:
                continue
            else:
                survey.ignored.append((record, state, why))
                trust.warn(_ignored_line(record, state, why))
            kept.append(record)

    triage(leases, survey.leases, kept_leases)
    triage(waiters, survey.waiters, kept_waiters)
    proven = trust.proven_leases(proof.runs, survey.leases, proof.host)
    survey.leases.extend(proven)
    kept_leases.extend(proven)
    if (
        not readable
        or proven
        or len(kept_leases) != len(leases) + len(proven)
        or len(kept_waiters) != len(waiters)
    ):
        _store(path, kept_leases, kept_waiters)
    return survey


def _ignored_line(record: Lease | Waiter, state: str, why: str) -> str:
    what = f"lease of {record.uuid}" if isinstance(record, Lease) else "waiter"
    return (
        f"GPU ledger: {what} by run {record.run_id} ignored ({state}): {why}; "
        f"clear it with `mlkit gpus --release {record.run_id}`"
    )


def _live(path: Ledger | Path) -> tuple[list[Lease], list[Waiter]]:
    """Read under the lock: the honoured leases and waiters (see `_survey`)."""
    survey = _survey(path)
    return survey.leases, survey.waiters


def read_survey(wait: float = LOCK_WAIT_S) -> Survey:
    """The ledger as judged now (for `mlkit gpus`)."""
    if not os.path.lexists(settings.host_state_dir()):
        return Survey()
    with locked(wait) as path:
        return _survey(path)


def read_leases(wait: float = LOCK_WAIT_S) -> list[Lease]:
    """The live leases on this host (dead owners' leases are reclaimed on the way)."""
    return read_state(wait)[0]


def read_state(wait: float = LOCK_WAIT_S) -> tuple[list[Lease], list[Waiter]]:
    """The live leases and the runs waiting for GPUs (oldest first) on this host. LockedError
    (naming the holder) when the ledger's lock is not free within `wait` s."""
    if not os.path.lexists(settings.host_state_dir()):
        return [], []
    with locked(wait) as path:
        return _live(path)


def leased_run_ids() -> set[str]:
    """Run ids that hold a GPU lease now (gc never touches them)."""
    return {lease.run_id for lease in read_leases()}


def track_lease(lease: GpuLease, pid: int) -> None:
    """GpuLease.track for a lease of GPUs: record the run's entry point (`pid`, leading its own
    process group) in the ledger; the lease then lasts while it or its group lives."""
    start = procid.start_time(pid)
    if start is None or start == procid.HIDDEN:
        return
    mine = set(lease.uuids)
    with locked() as path:
        leases, waiters, readable = _load_checked(path)
        if not readable:  # garbage: put back what live runs prove first, never write it "all free"
            _survey(path)
            leases, waiters = _load(path)
        for record in leases:
            if record.uuid in mine and record.run_id == lease.run_id and record.pid == lease.owner_pid:
                record.procs = [[pid, start]]
                record.pgid = pid
        _store(path, leases, waiters)


def remove_lease(lease: GpuLease) -> None:
    """GpuLease.release for a lease of GPUs: drop its records from the ledger."""
    mine = set(lease.uuids)
    with locked() as path:
        leases, waiters = _load(path)
        kept = [
            record
            for record in leases
            if not (record.uuid in mine and record.run_id == lease.run_id and record.pid == lease.owner_pid)
        ]
        if len(kept) != len(leases):
            _store(path, kept, waiters)


def release_leases(target: str) -> list[Lease]:
    """`mlkit gpus --release RUN|UUID`: remove the ledger's leases and waiters of run `target` (a
    run id or a prefix of 6+ characters) or on GPU `target` (a UUID); returns the leases removed.

    NotFoundError when nothing matches. Refused (ReleaseRefusedError) for a run that is alive
    and another user's, unless we are root: only stale, foreign or impostor records, or our own.
    """
    target = target.strip()
    if len(target) < 6:
        raise UsageError(
            f"--release {target!r}: give a run id (6+ characters) or a GPU UUID",
            hint="`mlkit gpus` lists the leases with their run ids and GPU UUIDs",
        )
    with locked() as path:
        leases, waiters, _ = _load_checked(path)
        proof = trust.gather(path.dir_fd)

        def match(record: Lease | Waiter) -> bool:
            return record.run_id.startswith(target) or (isinstance(record, Lease) and record.uuid == target)

        records: list[Lease | Waiter] = [*leases, *waiters]
        hits = [r for r in records if match(r)]
        if not hits:
            raise NotFoundError(
                f"--release {target}: no lease or waiter of that run or GPU in {path.path}",
                hint="`mlkit gpus` lists the leases with their run ids and GPU UUIDs",
            )
        me = os.getuid()
        for record in hits:
            state, why = trust.judge(record, proof)
            owner = procid.uid_of(record.pid) if state == trust.LIVE else None
            if state == trust.LIVE and me != 0 and owner is not None and owner != me:
                raise ReleaseRefusedError(
                    f"--release {target}: run {record.run_id} is alive ({why}) and belongs to "
                    f"{procid.user_name(owner)}",
                    hint="ask its user to stop the run, or ask root to release it",
                )
        _store(path, [r for r in leases if not match(r)], [w for w in waiters if not match(w)])
    return [r for r in hits if isinstance(r, Lease)]


class ReleaseRefusedError(MlkitError):
    """`mlkit gpus --release` of a live run of another user, not as root."""

    exit_code = ExitCode.NO_PERMISSION


def poll_interval() -> float:
    try:
        return max(0.01, float(os.environ.get(POLL_ENV, "2")))
    except ValueError:
        return 2.0


def reserve_gpus(
    request: GpuRequest,
    *,
    run_id: str,
    owner_pid: int,
    wait: float | None = None,
    on_wait: Callable[[str], None] | None = None,
    role: str | None = None,
) -> GpuLease:
    """`mlkit.gpu.reserving.reserve` for a request of GPUs (not `none`): see there."""
    # import budget: only a run that asks for GPUs
    from mlkit.gpu import allocation

    entries = allocation.allocated()
    if entries is not None:  # inside a Slurm job: its GPUs only, and Slurm (not this ledger) arbitrates
        return _reserve_allocated(request, entries, run_id=run_id, owner_pid=owner_pid)
    visible = allocation.inherited()  # an inherited CUDA_VISIBLE_DEVICES: only its GPUs, still leased here
    parent_run = _parent_lease(visible) if visible else None
    if parent_run is not None and visible:  # a nested `mlkit run`: within its parent run's lease
        return _reserve_allocated(request, visible, run_id=run_id, owner_pid=owner_pid, parent_run=parent_run)
    import socket  # import budget: `--gpus none` (returned above) never loads socket

    from mlkit.gpu.devices import read_gpus  # import budget: nor the probe (NVML)

    started = time.monotonic()
    deadline = started + wait if wait else None
    pid_start = procid.start_time(owner_pid)
    pid_start = None if pid_start == procid.HIDDEN else pid_start
    host, user, uid = socket.gethostname(), _user(), procid.uid_of(owner_pid)
    held_fd = _hold() if owner_pid == os.getpid() else None  # proof that we are an mlkit process
    queued = False  # in the ledger's wait queue (removed again however this ends)
    since: float | None = None  # when we joined it: our place in it
    last_message = None
    try:
        while True:
            with _lock_until(deadline, wait, on_wait) as path:
                survey = _survey(path)
                waiters = survey.waiters
                place = next((i for i, w in enumerate(waiters) if _is(w, run_id, owner_pid)), len(waiters))
                report = read_gpus(survey.leases)
                leases = _known(survey.leases, report)
                if visible is not None:
                    report = allocation.narrow(report, visible)
                report.leases = leases
                kept = leases + [r for r, _, _ in survey.ignored if isinstance(r, Lease)]
                taken = {lease.uuid: lease.run_id for lease in leases}
                for uuid in _held_by_kernel([g.uuid for g in report.gpus if g.uuid not in taken]):
                    taken[uuid] = KERNEL_HOLDER  # a live holder the ledger lost (spoiled, torn)
                held = holds(report, waiters[:place], taken)  # for the runs that have waited longer
                selection = select(report, request, {**taken, **held})
                if selection.ok:
                    now = time.time()
                    new = [
                        Lease(g.uuid, run_id, owner_pid, pid_start, host, now, user, uid, role=role)
                        for g in selection.gpus
                    ]
                    if new or queued or len(leases) != len(survey.leases):
                        _store(path, kept + new, _kept_waiters(survey, run_id, owner_pid))
                    queued = False
                    lease = GpuLease(
                        gpus=selection.gpus,
                        env=cuda_env(selection.gpus),
                        tags=lease_tags(selection.gpus, report),
                        notice=selection.notice,
                        run_id=run_id,
                        owner_pid=owner_pid,
                        _track=track_lease,
                        _remove=remove_lease,
                    )
                    if new:
                        lease._held_fd, held_fd = held_fd, None
                        lease._gpu_fds = _hold_gpus([g.uuid for g in selection.gpus])
                    return lease
                if not selection.fatal and deadline is not None and place == len(waiters):
                    # join the queue (or re-join it, in our old place, if a torn ledger lost it)
                    since = since or time.time()
                    waiter = Waiter.of(
                        request, run_id=run_id, pid=owner_pid, pid_start=pid_start, host=host,
                        since=since, user=user, uid=uid,
                    )  # fmt: skip
                    queue = sorted([*_kept_waiters(survey, run_id, owner_pid), waiter], key=lambda w: w.since)
                    _store(path, kept, queue)
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
        if held_fd is not None:
            os.close(held_fd)
        if queued:  # gave up, timed out or was interrupted: leave the queue
            with contextlib.suppress(MlkitError), locked(_LEAVE_QUEUE_WAIT_S) as path:
                leases, waiters = _load(path)
                _store(path, leases, [w for w in waiters if not _is(w, run_id, owner_pid)])


def _parent_lease(entries: list[str]) -> str | None:
    """Inside an mlkit run (MLKIT_RUN_ID inherited): that run's id when its lease holds every GPU
    of the inherited CUDA_VISIBLE_DEVICES (`entries`, the UUIDs it gave its entry point) and the
    lease's supervisor is an ancestor of this process, started when the lease says. A nested
    `mlkit run` then uses those GPUs within its parent's lease: the parent holds them for its
    whole process tree, and nobody else can take them meanwhile."""
    parent_run = os.environ.get(trust.RUN_ID_ENV, "")
    if not parent_run:
        return None
    ancestors = set(procid.ancestors_of(os.getpid()))
    with locked() as path:
        leases, _waiters = _load(path)
    held = {
        lease.uuid
        for lease in leases
        if lease.run_id == parent_run
        and lease.pid in ancestors
        and lease.pid_start is not None
        and abs((procid.start_time(lease.pid) or 0.0) - lease.pid_start) <= procid.START_TOLERANCE_S
    }
    return parent_run if held and set(entries) <= held else None


def _reserve_allocated(
    request: GpuRequest, entries: list[str], *, run_id: str, owner_pid: int, parent_run: str | None = None
) -> GpuLease:
    """`reserve` inside an allocation someone else arbitrates — a Slurm job's, or (`parent_run`)
    the lease of the mlkit run this one is nested in: select among its GPUs, no ledger entry."""
    # import budget: only a run that asks for GPUs, inside a Slurm job or another mlkit run
    from mlkit.gpu import allocation
    from mlkit.gpu.devices import read_gpus

    if parent_run is None:
        report = allocation.scope(read_gpus([]), entries)
        where, hint = (
            "inside the Slurm job",
            "ask Slurm for them: mlkit run --backend slurm --gpus N (or sbatch --gpus N)",
        )
    else:
        report = allocation.narrow(read_gpus([]), entries)
        where, hint = f"inside run {parent_run}", "give the outer run more GPUs (mlkit run --gpus N)"
    selection = select(report, request, {})
    if not selection.ok:
        raise GpuUnavailableError(
            (selection.message or "no GPU available") + f" ({where}: only its GPUs count)", hint=hint
        )
    env = cuda_env(selection.gpus)
    if selection.gpus and parent_run is None:
        env["CUDA_VISIBLE_DEVICES"] = allocation.visible_devices(selection.gpus, entries)
    arbiter = "slurm" if parent_run is None else f"run {parent_run}"
    return GpuLease(
        gpus=selection.gpus,
        env=env,
        tags={**lease_tags(selection.gpus, report), "mlkit.gpu.arbiter": arbiter},
        notice=selection.notice,
        run_id=run_id,
        owner_pid=owner_pid,
        released=True,  # nothing in the host ledger to give back
    )


def _lock_until(
    deadline: float | None, wait: float | None, on_wait: Callable[[str], None] | None
) -> contextlib.AbstractContextManager[Ledger]:
    """The ledger lock for `reserve`: within what is left of --wait (then GpuWaitTimeoutError naming
    the holder), or LOCK_WAIT_S without --wait (then LockedError). Only a wait that lasts (30 s)
    is reported to `on_wait`: other runs hold the lock for moments all the time."""
    started = time.monotonic()

    def lasting(message: str) -> None:
        if on_wait is not None and time.monotonic() - started > 1.0:
            with contextlib.suppress(Exception):  # a broken callback must not break the wait
                on_wait(message)

    if deadline is None:
        return locked(LOCK_WAIT_S, on_wait=lasting)
    limit = "forever" if wait is None or math.isinf(wait) else f"{wait:g}s"
    left = max(0.0, deadline - started)
    return locked(left, error=GpuWaitTimeoutError, why=f"--wait {limit} ran out: ", on_wait=lasting)


def _known(leases: list[Lease], report: GpuReport) -> list[Lease]:
    """The leases whose GPU the probe knows; while NVML sees every GPU, a lease of an unknown
    UUID is dropped with a warning (it can only be a bad record: no run could use that GPU)."""
    units = report.by_uuid()
    if not report.gpus or any(gpu.lost for gpu in report.gpus):
        return leases
    for lease in leases:
        if lease.uuid not in units:
            trust.warn(f"GPU ledger: lease by run {lease.run_id} dropped: no GPU {lease.uuid!r} on this host")
    return [lease for lease in leases if lease.uuid in units]


def _kept_waiters(survey: Survey, run_id: str, pid: int) -> list[Waiter]:
    """The queue to write back: honoured waiters and ignored ones (shown, not served), not us."""
    ignored = [r for r, _, _ in survey.ignored if isinstance(r, Waiter)]
    return [w for w in [*survey.waiters, *ignored] if not _is(w, run_id, pid)]


def _hold() -> int | None:
    """A shared flock on the state dir's `gpu-leases.held`, kept while we wait or hold GPUs:
    /proc/locks then shows that this pid is an mlkit process (trust.judge). None when it cannot
    be had (a planted file, a stuck exclusive holder): then our `mlkit` command line tells."""
    try:
        dir_fd = settings.open_state_dir()
    except (MlkitError, OSError):
        return None
    try:
        mode = settings.state_file_mode(dir_fd)
        fd = fsio.open_file(trust.HELD_FILE, dir_fd=dir_fd, create=True, mode=mode, other_owners=True)
    except (MlkitError, OSError) as exc:
        trust.warn(f"GPU ledger: {trust.HELD_FILE}: {exc}")
        return None
    finally:
        os.close(dir_fd)
    try:
        held = fsio.try_lock(fd, shared=True)
    except OSError:
        held = False
    if not held:
        os.close(fd)
        return None
    return fd


def _gpu_file(uuid: str) -> str:
    """`gpu-held-<uuid>` in the state dir: flocked (exclusive) by the live holder of that GPU."""
    return GPU_HELD_PREFIX + uuid.replace("/", "_")  # a MIG uuid holds slashes


def _gpu_fds(uuids: list[str]) -> Iterator[tuple[str, int]]:
    """(uuid, an open descriptor of its `gpu-held-` file) for each GPU whose file can be had, made
    if missing (shared like the ledger). One that cannot (a planted link) is skipped with a warning:
    the ledger still speaks for that GPU."""
    try:
        dir_fd = settings.open_state_dir()
    except (MlkitError, OSError):
        return
    try:
        mode = settings.state_file_mode(dir_fd)
        for uuid in uuids:
            try:
                fd = fsio.open_file(_gpu_file(uuid), dir_fd=dir_fd, create=True, mode=mode, other_owners=True)
            except (MlkitError, OSError) as exc:
                trust.warn(f"GPU ledger: {_gpu_file(uuid)}: {exc}")
                continue
            yield uuid, fd
    finally:
        os.close(dir_fd)


def _held_by_kernel(uuids: list[str]) -> set[str]:
    """The GPUs of `uuids` that a live process holds, as the kernel says: its flock on the GPU's
    `gpu-held-` file. Asked under the ledger's lock, so no reserver takes one meanwhile. This is what
    no ledger text can hide: another user may overwrite the 0666 ledger, and a rebuild cannot read
    the live runs of users it may not inspect (their /proc/PID/environ)."""
    held = set()
    for uuid, fd in _gpu_fds(uuids):
        try:
            if not fsio.try_lock(fd):
                held.add(uuid)
        except OSError:
            pass
        finally:
            os.close(fd)  # our test lock, if we got it, goes with the descriptor
    return held


def _hold_gpus(uuids: list[str]) -> list[int]:
    """Exclusive flocks on the leased GPUs' files, kept open (close-on-exec: the supervisor's own)
    until the lease is released or the process dies (docs/gpus.md, "Shared state")."""
    fds = []
    for _uuid, fd in _gpu_fds(uuids):
        try:
            locked = fsio.try_lock(fd)
        except OSError:
            locked = False
        if locked:
            fds.append(fd)
        else:
            os.close(fd)
    return fds


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
        import getpass  # import budget: only a run that takes GPUs needs its user's name

        return getpass.getuser()
    except (KeyError, OSError):
        return None
