"""`execute(plan, store)`: start the entry point in its own process group and supervise it.

The child's stdout and stderr are teed, chunk by chunk as they arrive, to the terminal and to
`<run>/artifacts/logs/output.log`. SIGINT/SIGTERM/SIGHUP that reach the supervisor are forwarded to
the child's whole group, followed by SIGKILL after a grace period (a second signal: at once);
`--timeout` stops the run the same way. When the child is gone, anything it left behind in its
group or anywhere below us (we are a child subreaper: setsid and double forks reparent to us) is
stopped too, and the entry point dies with a SIGKILLed supervisor (PR_SET_PDEATHSIG). The run's
final status and tags are written here.

The pieces: `signals` (SignalRouter), `tee` (the output copy and output.log), `tree` (the run's
processes and stopping them); this module runs the steps in order and records the outcome.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from mlkit import proc as proc_mod
from mlkit.errors import MlkitError
from mlkit.procid import hostname
from mlkit.runner.plan import RunPlan, signal_name
from mlkit.runner.signals import Interrupted, SignalRouter
from mlkit.runner.tee import Tee, close_tee
from mlkit.runner.tree import RunTree, Stopper, become_subreaper, snapshot

if TYPE_CHECKING:  # annotations only: a run without GPUs or metrics never loads these
    from mlkit.gpu.lease import GpuLease
    from mlkit.gpu.sampler import SystemMetricsSampler
    from mlkit.tracking.store import FileStore


def _log(level: str, message: str, *args: object) -> None:
    """Log on the "mlkit.runner" logger; logging is imported only when something is logged."""
    # import budget: logging loads only when something is logged; a plain mlkit run never loads it
    import logging

    getattr(logging.getLogger("mlkit.runner"), level)(message, *args)


FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"

Notify = Callable[[str], None]


@dataclass(eq=False)
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
    """Launch, wait, stop whatever is left, record: the steps of `execute` in order."""
    if router.received is not None:  # a signal came in just before the launch
        raise Interrupted(router.received)
    router.mode = "defer"  # from here a signal is handled below, never by unwinding past the child
    become_subreaper()
    launched = _launch(plan, stdout, stderr, log_fd)
    if plan.container_name:  # stopping the client must stop its container too (stop, then kill)
        # import budget: the container module loads only for docker_env runs
        from mlkit.runner.container import container_tree

        launched.tree = container_tree(launched.tree, plan)
    stopper = Stopper(launched.tree, plan.kill_grace)
    try:
        returncode, sampler = _wait(
            plan, store, lease, gpu_uuids, metrics_interval, notify, router, launched, stopper
        )
    except BaseException:  # never leave the entry point running behind a failed supervisor
        launched.tree.signal(signal.SIGKILL)
        launched.child.wait()
        finish = getattr(launched.tree, "finish", None)
        if finish is not None:  # docker_env: the engine keeps the container; remove it now
            with contextlib.suppress(Exception):
                finish(-signal.SIGKILL)
        launched.close_output()
        raise
    _stop_leftovers(launched.tree, plan.kill_grace)
    finish = getattr(launched.tree, "finish", None)
    if finish is not None:  # docker_env: no container left running; 128+N from it means signal N
        returncode = finish(returncode)
    stopper.cancel()
    launched.tree.reap()
    launched.close_output()
    return _record_end(plan, store, lease, notify, t0, returncode, stopper, launched.tee.oom, sampler)


@dataclass(eq=False)
class _Launched:
    """The started entry point: its process, its tree, and the tee reading its output pipes."""

    child: subprocess.Popen[bytes]
    tree: RunTree
    tee: Tee
    out_r: int
    err_r: int

    def close_output(self) -> None:
        close_tee(self.tee, self.out_r, self.err_r)


def _launch(plan: RunPlan, stdout: IO[bytes] | None, stderr: IO[bytes] | None, log_fd: int) -> _Launched:
    """Start the tee, then the entry point in a new session with its output piped to the tee."""
    # The tee starts before the child: starting a thread waits until it runs, which is quicker
    # while the child's own start-up is not competing for the CPU.
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    tee = Tee({out_r: stdout, err_r: stderr}, log_fd)
    tee.start()
    before = snapshot()
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
        close_tee(tee, out_r, err_r)
        raise
    os.close(out_w)  # the child has its own copies: the tee sees EOF when the child is done
    os.close(err_w)
    return _Launched(child, RunTree(child, plan.run_id, before), tee, out_r, err_r)


def _wait(
    plan: RunPlan,
    store: FileStore,
    lease: GpuLease | None,
    gpu_uuids: list[str] | None,
    metrics_interval: float,
    notify: Notify,
    router: SignalRouter,
    launched: _Launched,
    stopper: Stopper,
) -> tuple[int, SystemMetricsSampler | None]:
    """Wait for the entry point, forwarding signals and enforcing --timeout; (returncode, sampler)."""
    child = launched.child
    if lease is not None:
        try:  # the lease now lasts as long as the entry point's process group
            lease.track(child.pid)
        except Exception as exc:  # the supervisor still holds it; the run goes on
            _log("warning", "recording the entry point in the GPU lease failed: %s", exc)
    router.on_signal = lambda signum: stopper.stop(signum, "signal")
    router.mode = "forward"
    if router.received is not None and stopper.reason is None:  # came during the spawn
        stopper.stop(router.received, "signal")
    timer = None
    if plan.timeout:
        timer = threading.Timer(plan.timeout, stopper.stop, args=(signal.SIGTERM, "timeout"))
        timer.daemon = True
        timer.start()
    if plan.secondary:  # system metrics come from the first node: two nodes must not log one key
        metrics_interval = 0.0
    sampler = _start_sampler(store, plan.run_id, gpu_uuids or [], metrics_interval, child.pid, notify)
    returncode = child.wait()  # signals are handled while waiting (PEP 475 retries the wait)
    router.mode = "defer"
    if timer is not None:
        timer.cancel()
    return returncode, sampler


def _stop_leftovers(tree: RunTree, kill_grace: float) -> None:
    """Whatever the entry point left running (in its group, or orphaned to us: setsid, double
    forks, env -i) goes too: nothing the run started outlives it."""
    if tree.alive():
        tree.signal(signal.SIGTERM)
        deadline = time.monotonic() + min(kill_grace, 5.0)
        while time.monotonic() < deadline and tree.alive():
            time.sleep(0.05)
        deadline = time.monotonic() + 5.0  # SIGKILL until none is left (a forking one may race us)
        while tree.alive() and time.monotonic() < deadline:
            tree.signal(signal.SIGKILL)
            time.sleep(0.05)


def failed_node_tags(node_rank: int, exit_code: int) -> dict[str, str]:
    """What a secondary node of a multi-node run writes when its share failed: the node, named."""
    return {"mlkit.failed_node": f"{hostname()} (node rank {node_rank}, exit {exit_code})"}


def _record_end(
    plan: RunPlan,
    store: FileStore,
    lease: GpuLease | None,
    notify: Notify,
    t0: float,
    returncode: int,
    stopper: Stopper,
    oom: bool,
    sampler: SystemMetricsSampler | None,
) -> RunResult:
    """Classify how the entry point ended, stop the sampler, give the GPUs back, write the status."""
    status, exit_code, reason, sig = classify(returncode, stopper.reason, stopper.signum)
    if oom and status != FINISHED:
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
    # A run deleted while it ran (a soft delete, as MLflow's) still gets its end: never left RUNNING.
    records = [
        lambda: store.set_tags(plan.run_id, tags, deleted_ok=True),
        lambda: store.set_terminated(plan.run_id, status, deleted_ok=True),
    ]
    if plan.secondary:  # the first node records the run; this one names itself if it failed
        records = (
            [
                lambda: store.set_tags(
                    plan.run_id, failed_node_tags(plan.node_rank, exit_code), deleted_ok=True
                )
            ]
            if status != FINISHED
            else []
        )
    for record in records:
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
        # import budget: the sampler (and NVML) load only when system metrics are sampled
        from mlkit.gpu import SystemMetricsSampler

        sampler = SystemMetricsSampler(store, run_id, uuids, interval)
        sampler.start(pid)
        return sampler
    except Exception as exc:  # metrics are a nice-to-have; the run goes on without them
        notify(f"mlkit: system metrics are off: {exc}")
        return None
