"""`execute(plan, store)`: start the entry point in its own process group and supervise it.

The child's stdout and stderr are teed, chunk by chunk as they arrive, to the terminal and to
`<run>/artifacts/logs/output.log`. SIGINT/SIGTERM/SIGHUP that reach the supervisor are forwarded to
the child's whole group, followed by SIGKILL after a grace period (a second signal: at once);
`--timeout` stops the run the same way. When the child is gone, anything it left behind in its
group or anywhere below us (we are a child subreaper: setsid and double forks reparent to us) is
stopped too, and the entry point dies with a SIGKILLed supervisor (PR_SET_PDEATHSIG). The run's final status and tags are written here.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from mlkit import procid
from mlkit.errors import MlkitError
from mlkit.runner import proc as proc_mod
from mlkit.runner.plan import RunPlan, signal_name

if TYPE_CHECKING:  # annotations only: a run without GPUs or metrics never loads these
    from mlkit.gpu.ledger import GpuLease
    from mlkit.gpu.sampler import SystemMetricsSampler
    from mlkit.tracking.store import FileStore


def _log(level: str, message: str, *args: object) -> None:
    """Log on the "mlkit.runner" logger; logging is imported only when something is logged."""
    import logging

    getattr(logging.getLogger("mlkit.runner"), level)(message, *args)


FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
OOM_MARKERS = (b"CUDA out of memory", b"OutOfMemoryError")
_OOM_TAIL = max(len(m) for m in OOM_MARKERS)

Notify = Callable[[str], None]


@dataclass
class RunResult:
    """How a run ended. `exit_code` is what `mlkit run` exits with."""

    run_id: str
    status: str
    exit_code: int
    duration_s: float
    failure_reason: str | None = None
    experiment_id: str | None = None
    artifact_uri: str | None = None
    signal: str | None = None
    error: MlkitError | None = field(default=None, repr=False, compare=False)

    def summary(self) -> dict[str, Any]:
        """The `--json` document."""
        return {
            "run_id": self.run_id,
            "experiment_id": self.experiment_id,
            "status": self.status,
            "exit_code": self.exit_code,
            "duration_s": round(self.duration_s, 3),
            "failure_reason": self.failure_reason,
            "artifact_uri": self.artifact_uri,
        }


# ----------------------------------------------------------------------------- signal routing
class SignalRouter:
    """Owns SIGINT/SIGTERM/SIGHUP for the supervisor's lifetime (main thread only).

    Before the child starts, a signal raises `Interrupted` (so setup unwinds and the run is marked
    KILLED); while a child runs it goes to `on_signal`; while the run is being recorded it is only
    remembered, so the bookkeeping is never cut in half.
    """

    def __init__(self) -> None:
        self.active = threading.current_thread() is threading.main_thread()
        self._previous: dict[int, Any] = {}
        self.mode = "raise"
        self.on_signal: Callable[[int], None] | None = None
        self.received: int | None = None

    def __enter__(self) -> SignalRouter:
        if self.active:
            for sig in FORWARDED_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        if self.received is None:
            self.received = signum
        if self.mode == "forward" and self.on_signal is not None:
            self.on_signal(signum)
        elif self.mode == "raise":
            raise Interrupted(signum)


class Interrupted(BaseException):
    """The supervisor got SIGINT/SIGTERM/SIGHUP before the child started."""

    def __init__(self, signum: int):
        super().__init__(signal_name(signum))
        self.signum = signum


# ----------------------------------------------------------------------------- output tee
class _Tee(threading.Thread):
    """Copies the child's stdout/stderr pipes to the terminal streams and to one log file."""

    def __init__(self, pipes: dict[int, IO[bytes] | None], log_fd: int):
        super().__init__(name="mlkit-tee", daemon=True)
        self.pipes = pipes  # pipe fd -> where its bytes go on our side (None: log only)
        self.log_fd = log_fd
        self.oom = False
        self._tails: dict[int, bytes] = dict.fromkeys(pipes, b"")
        self._log_at_line_start = True

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        for fd in self.pipes:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        open_fds = set(self.pipes)
        try:
            while open_fds:
                for key, _ in sel.select():
                    fd = key.fd
                    try:
                        chunk = os.read(fd, 65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        chunk = b""
                    if not chunk:
                        sel.unregister(fd)
                        open_fds.discard(fd)
                        continue
                    self._write(fd, chunk)
        finally:
            sel.close()

    def _write(self, fd: int, chunk: bytes) -> None:
        logged, self._log_at_line_start = as_log_lines(chunk, self._log_at_line_start)
        try:  # O_APPEND, unbuffered: `runs logs --follow` sees it now
            os.write(self.log_fd, logged)
        except OSError as exc:  # disk full: keep the child's output flowing to the terminal
            _log("warning", "cannot write output.log: %s", exc)
        stream = self.pipes[fd]
        if stream is not None:
            try:
                stream.write(chunk)
                stream.flush()
            except (OSError, ValueError):  # terminal gone (`| head`, closed ssh): log file only
                self.pipes[fd] = None
        if not self.oom:
            window = self._tails[fd] + chunk
            if any(marker in window for marker in OOM_MARKERS):
                self.oom = True
            self._tails[fd] = window[-_OOM_TAIL:]


REWRITE = b"\r\x1b[K"  # carriage return + erase line: "redraw this line" (the trainers' status line)


def as_log_lines(chunk: bytes, at_line_start: bool = True) -> tuple[bytes, bool]:
    """What output.log keeps of the child's bytes, and whether the log then ends a line.

    The bytes as written, except that a status line redrawn in place on a terminal (`\\r ESC[K`)
    becomes one line per update, so the log reads like the output of a run without a terminal;
    a redraw at the start of a line adds no empty line. Any other byte, a lone `\\r` included,
    is kept as it is.
    """
    if REWRITE not in chunk:
        return chunk, chunk.endswith(b"\n") if chunk else at_line_start
    out = bytearray()
    for i, piece in enumerate(chunk.split(REWRITE)):
        if i and not at_line_start:  # a redraw in mid-line ends that line
            out += b"\n"
            at_line_start = True
        if piece:
            out += piece
            at_line_start = piece.endswith(b"\n")
    return bytes(out), at_line_start


def _close_tee(tee: _Tee, *pipes: int) -> None:
    """Let the tee copy what is left in the pipes (up to 5 s), then close their read ends."""
    tee.join(timeout=5)
    for fd in pipes:
        with contextlib.suppress(OSError):
            os.close(fd)


# ----------------------------------------------------------------------------- process tree
def _become_subreaper() -> None:
    """Orphans of the child (double forks, torchrun workers whose agent died) reparent to us,
    not to init, so they can still be found and stopped. Linux only; elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def _descendants() -> list[int]:
    """Every process below this one (cheap on Linux: no scan of all of /proc)."""
    if procid.children_of(os.getpid()) is None:
        import psutil

        try:
            return [p.pid for p in psutil.Process().children(recursive=True)]
        except psutil.Error:
            return []
    return procid.descendants_of(os.getpid())


def _living(pid: int) -> bool:
    """Alive and not a zombie."""
    return procid.start_time(pid) is not None


class _Tree:
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


def _snapshot() -> set[procid.ProcessRef]:
    """Our descendants now (pid + start time): not the run's processes."""
    return {procid.ProcessRef(pid, procid.start_time(pid)) for pid in _descendants()}


class _Stopper:
    """Stops the child: the signal to the group, SIGKILL after the grace period; at most once each."""

    def __init__(self, tree: _Tree, grace: float):
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


# ----------------------------------------------------------------------------- execute
def execute(
    plan: RunPlan,
    store: FileStore,
    *,
    lease: GpuLease | None = None,
    metrics_interval: float = 0.0,
    gpu_uuids: list[str] | None = None,
    stdout: IO[bytes] | None = None,
    stderr: IO[bytes] | None = None,
    notify: Notify | None = None,
    router: SignalRouter | None = None,
    started_at: float | None = None,
) -> RunResult:
    """Run `plan` to the end and record the outcome in `store` (status, end time, tags).

    `stdout`/`stderr` are where the child's output is echoed (binary streams; None: log file
    only). `router` is the caller's SignalRouter; without one, execute installs its own.
    """
    notify = notify or (lambda _m: None)
    t0 = started_at if started_at is not None else time.monotonic()
    plan.log_dir.mkdir(parents=True, exist_ok=True)
    log_fd = os.open(plan.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    own_router = router is None
    router = router or SignalRouter()
    if own_router:
        router.__enter__()
    try:
        return _execute(
            plan, store, lease, metrics_interval, gpu_uuids, stdout, stderr, notify, router, log_fd, t0
        )
    finally:
        os.close(log_fd)
        if own_router:
            router.__exit__(None, None, None)


def _execute(
    plan: RunPlan,
    store: FileStore,
    lease: GpuLease | None,
    metrics_interval: float,
    gpu_uuids: list[str] | None,
    stdout: IO[bytes] | None,
    stderr: IO[bytes] | None,
    notify: Notify,
    router: SignalRouter,
    log_fd: int,
    t0: float,
) -> RunResult:
    if router.received is not None:  # a signal came in just before the launch
        raise Interrupted(router.received)
    router.mode = "defer"  # from here a signal is handled below, never by unwinding past the child
    _become_subreaper()
    # The tee starts before the child: starting a thread waits until it runs, which is quicker
    # while the child's own start-up is not competing for the CPU.
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    tee = _Tee({out_r: stdout, err_r: stderr}, log_fd)
    tee.start()
    before = _snapshot()
    try:
        # die_with_parent: a SIGKILLed supervisor takes the entry point with it (it cannot stop
        # it any more); we fork from the thread that waits for the child, so it lives as long.
        child = proc_mod.spawn(
            plan.argv, env=plan.env, cwd=plan.cwd, new_session=True, stdout=out_w, stderr=err_w,
            die_with_parent=True,
        )  # fmt: skip
    except BaseException:  # nothing will write to the pipes: the tee ends at once
        os.close(out_w)
        os.close(err_w)
        _close_tee(tee, out_r, err_r)
        raise
    os.close(out_w)  # the child has its own copies: the tee sees EOF when the child is done
    os.close(err_w)
    tree = _Tree(child, plan.run_id, before)
    stopper = _Stopper(tree, plan.kill_grace)
    timer = None
    try:
        if lease is not None:
            try:  # the lease now lasts as long as the entry point's process group
                lease.track(child.pid)
            except Exception as exc:  # the supervisor still holds it; the run goes on
                _log("warning", "recording the entry point in the GPU lease failed: %s", exc)
        router.on_signal = lambda signum: stopper.stop(signum, "signal")
        router.mode = "forward"
        if router.received is not None and stopper.reason is None:  # came during the spawn
            stopper.stop(router.received, "signal")
        if plan.timeout:
            timer = threading.Timer(plan.timeout, stopper.stop, args=(signal.SIGTERM, "timeout"))
            timer.daemon = True
            timer.start()
        sampler = _start_sampler(store, plan.run_id, gpu_uuids or [], metrics_interval, child.pid, notify)
        returncode = child.wait()  # signals are handled while waiting (PEP 475 retries the wait)
    except BaseException:  # never leave the entry point running behind a failed supervisor
        tree.signal(signal.SIGKILL)
        child.wait()
        _close_tee(tee, out_r, err_r)
        raise
    router.mode = "defer"
    if timer is not None:
        timer.cancel()

    # Whatever the entry point left running (in its group, or orphaned to us: setsid, double
    # forks, env -i) goes too: nothing the run started outlives it.
    if tree.alive():
        tree.signal(signal.SIGTERM)
        deadline = time.monotonic() + min(plan.kill_grace, 5.0)
        while time.monotonic() < deadline and tree.alive():
            time.sleep(0.05)
        deadline = time.monotonic() + 5.0  # SIGKILL until none is left (a forking one may race us)
        while tree.alive() and time.monotonic() < deadline:
            tree.signal(signal.SIGKILL)
            time.sleep(0.05)
    stopper.cancel()
    tree.reap()
    _close_tee(tee, out_r, err_r)

    status, exit_code, reason, sig = classify(returncode, stopper.reason, stopper.signum)
    if tee.oom and status != FINISHED:
        reason = "cuda_oom"

    tags: dict[str, str] = {"mlkit.exit_code": str(returncode if returncode >= 0 else 128 - returncode)}
    if reason:
        tags["mlkit.failure_reason"] = reason
    if sig:
        tags["mlkit.signal"] = sig
    if sampler is not None:
        try:
            summary = sampler.stop()
        except Exception as exc:  # the run's status matters more than its metrics summary
            notify(f"mlkit: system metrics: {exc}")
        else:
            if isinstance(summary, dict):
                _log("debug", "system metrics summary: %s", summary)
    if lease is not None:
        release_quietly(lease)
    # The entry point's outcome is decided: a store that cannot record it (a full disk) is said,
    # never allowed to turn it into another exit code. set_terminated retries and, on a full
    # disk, rewrites meta.yaml in place, so the status lands whenever it can.
    for record in (
        lambda: store.set_tags(plan.run_id, tags),
        lambda: store.set_terminated(plan.run_id, status),
    ):
        try:
            record()
        except MlkitError as exc:
            notify(f"mlkit: could not record the run's end: {exc}")
    return RunResult(
        run_id=plan.run_id,
        status=status,
        exit_code=exit_code,
        duration_s=time.monotonic() - t0,
        failure_reason=reason,
        experiment_id=plan.experiment_id,
        signal=sig,
    )


def classify(
    returncode: int, stop_reason: str | None, stop_signum: int | None
) -> tuple[str, int, str | None, str | None]:
    """(status, mlkit exit code, failure reason, signal name) for how the child ended."""
    if stop_reason == "timeout":
        return KILLED, 124, "timeout", signal_name(stop_signum or signal.SIGTERM)
    if stop_reason == "signal" and stop_signum is not None:
        return KILLED, 128 + stop_signum, "signal", signal_name(stop_signum)
    if returncode < 0:
        return KILLED, 128 - returncode, "signal", signal_name(-returncode)
    if returncode == 130:  # trainers exit 130 after catching Ctrl-C
        return KILLED, 130, "signal", "SIGINT"
    if returncode == 0:
        return FINISHED, 0, None, None
    return FAILED, returncode, "exit_code", None


def release_quietly(lease: GpuLease) -> None:
    """Give the GPUs back; a failure here must not hide how the run ended."""
    try:
        lease.release()
    except Exception as exc:
        _log("warning", "releasing the GPU lease failed: %s", exc)


def _start_sampler(
    store: FileStore, run_id: str, uuids: list[str], interval: float, pid: int, notify: Notify
) -> SystemMetricsSampler | None:
    if not interval or interval <= 0:
        return None
    try:
        from mlkit.gpu import SystemMetricsSampler

        sampler = SystemMetricsSampler(store, run_id, uuids, interval)
        sampler.start(pid)
        return sampler
    except Exception as exc:  # metrics are a nice-to-have; the run goes on without them
        notify(f"mlkit: system metrics are off: {exc}")
        return None
