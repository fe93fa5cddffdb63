"""Where a sweep's trials run. A trial is a run the driver created SCHEDULED; a launcher starts the
ordinary supervisor on it (`mlkit run DIR --run-id RUN ...`) and hands back a handle to watch and
stop it. `LocalLauncher` starts one supervisor process per trial on this host (each leases its own
GPUs through the ledger and queue); a batch launcher (a Slurm job array) takes the same trials.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from mlkit import proc, procid
from mlkit.errors import LaunchError, MlkitError


@dataclass(frozen=True)
class TrialLaunch:
    """What starting one trial needs: its run, project, params and the supervisor's flags."""

    run_id: str
    project_dir: str
    entry_point: str
    params: dict[str, str]
    store: str
    gpus: int  # 0: --gpus none
    wait: float | None  # seconds a trial may wait in the GPU queue
    env_manager: str = "auto"
    timeout: float | None = None
    system_metrics_interval: float | None = None
    log: str | None = None  # where the supervisor's own output goes (its run has output.log)

    def run_argv(self) -> list[str]:
        """`mlkit run` attached to the trial's run, as argv after `mlkit`."""
        argv = [
            "run",
            self.project_dir,
            "-e",
            self.entry_point,
            "--run-id",
            self.run_id,
            "--store",
            self.store,
        ]
        for key, value in self.params.items():
            argv += ["-P", f"{key}={value}"]
        argv += ["--gpus", str(self.gpus) if self.gpus > 0 else "none", "--env-manager", self.env_manager]
        if self.gpus > 0 and self.wait is not None:
            argv += ["--wait", f"{max(1, int(self.wait))}s"]
        if self.timeout is not None:
            argv += ["--timeout", f"{max(1, int(self.timeout))}s"]
        if self.system_metrics_interval is not None:
            argv += ["--system-metrics-interval", f"{self.system_metrics_interval:g}"]
        return argv


class TrialHandle(Protocol):
    """A started trial: `poll()` is None while it runs, then its exit code; `stop()` asks it to end
    as a --timeout would (SIGTERM, grace, SIGKILL); `kill()` ends it now."""

    run_id: str

    def poll(self) -> int | None: ...
    def stop(self) -> None: ...
    def kill(self) -> None: ...


class Launcher(Protocol):
    """Starts trials. `capacity(running)` is how many more may start now."""

    name: str

    def capacity(self, running: int) -> int: ...
    def start(self, trials: list[TrialLaunch]) -> list[TrialHandle]: ...


@dataclass
class LocalTrial:
    """A trial whose supervisor this driver started (its own process group)."""

    run_id: str
    popen: subprocess.Popen[bytes]
    log: IO[Any] | None = None

    def poll(self) -> int | None:
        code = self.popen.poll()
        if code is not None and self.log is not None:
            self.log.close()
            self.log = None
        return code

    def stop(self) -> None:
        # the supervisor forwards it, waits, then SIGKILLs; a no-op once the watcher has reaped it
        # (its pid may then be another process's)
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        # a reaped leader's pid names its group only while a member lives (a live group's id is
        # never reused); once the group is gone, the number may be anyone's
        if self.popen.returncode is not None and not proc.group_alive(self.popen.pid):
            return
        proc.signal_group(self.popen.pid, signal.SIGKILL)


@dataclass
class AdoptedTrial:
    """A trial whose supervisor another (possibly dead) driver started: watched by its pid."""

    run_id: str
    ref: procid.ProcessRef
    done_code: int | None = field(default=None)

    def poll(self) -> int | None:
        if self.done_code is None and not procid.is_same(self.ref):
            self.done_code = 0  # the store says how it ended
        return self.done_code

    def stop(self) -> None:
        if procid.is_same(self.ref):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.ref.pid, signal.SIGTERM)

    def kill(self) -> None:
        if procid.is_same(self.ref):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.ref.pid, signal.SIGKILL)


class LocalLauncher:
    """One `mlkit run --run-id` supervisor per trial on this host, `parallel` at a time."""

    name = "local"

    def __init__(self, parallel: int) -> None:
        self.parallel = parallel
        self.ended = threading.Event()  # set when any trial's supervisor exits: the driver wakes

    def capacity(self, running: int) -> int:
        return max(0, self.parallel - running)

    def start(self, trials: list[TrialLaunch]) -> list[TrialHandle]:
        """Start each trial's supervisor; when one cannot start, a TrialStartError carries the
        handles of those already started (the driver watches and stops them)."""
        handles: list[TrialHandle] = []
        for trial in trials:
            try:
                handle = self._start(trial)
            except (OSError, MlkitError) as exc:
                raise TrialStartError.of(trial, exc, handles) from exc
            # a freed slot is refilled at once, not at the driver's next poll
            threading.Thread(target=self._watch, args=(handle.popen,), daemon=True).start()
            handles.append(handle)
        return handles

    def _watch(self, popen: subprocess.Popen[bytes]) -> None:
        popen.wait()
        self.ended.set()

    @staticmethod
    def _start(trial: TrialLaunch) -> LocalTrial:
        log: IO[Any] | None = None
        if trial.log:
            Path(trial.log).parent.mkdir(parents=True, exist_ok=True)
            log = open(trial.log, "ab")  # noqa: SIM115 - closed when the trial is reaped
        try:
            return LocalTrial(trial.run_id, LocalLauncher._spawn(trial, log), log)
        except BaseException:
            if log is not None:
                log.close()
            raise

    @staticmethod
    def _spawn(trial: TrialLaunch, log: IO[Any] | None) -> subprocess.Popen[bytes]:
        # the `mlkit` program's own entry point, in the driver's interpreter
        argv = proc.mlkit_argv(sys.executable, *trial.run_argv())
        env = {
            "MLKIT_RUN_ID": None,
            "MLFLOW_RUN_ID": None,
            "MLKIT_EXPERIMENT_ID": None,
            "MLFLOW_EXPERIMENT_ID": None,
        }
        return proc.spawn(
            argv,
            env=env,
            new_session=True,  # the driver stops each trial itself; a terminal's Ctrl-C reaches only it
            stdin=subprocess.DEVNULL,
            stdout=log if log is not None else subprocess.DEVNULL,
            stderr=subprocess.STDOUT if log is not None else subprocess.DEVNULL,
        )


class TrialStartError(LaunchError):
    """A trial of a batch could not be started; `started` are the batch's trials that were."""

    def __init__(self, message: str, hint: str | None, started: list[TrialHandle]) -> None:
        super().__init__(message, hint=hint)
        self.started = started

    @classmethod
    def of(cls, trial: TrialLaunch, exc: BaseException, started: list[TrialHandle]) -> TrialStartError:
        if isinstance(exc, MlkitError):
            return cls(exc.message, exc.hint, started)
        where = f" ({exc.filename})" if isinstance(exc, OSError) and exc.filename else ""
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return cls(
            f"trial run {trial.run_id}: cannot start its supervisor: {reason}{where}",
            hint="check that the store's artifacts directory is writable and not full",
            started=started,
        )


def supervisor_of(run_id: str) -> procid.ProcessRef | None:
    """A live `mlkit run --run-id RUN` process on this host (started by some driver), or None."""
    for pid in procid.pids():
        argv = procid.cmdline_of(pid)
        if not argv or "--run-id" not in argv:
            continue
        i = argv.index("--run-id")
        if i + 1 < len(argv) and argv[i + 1] == run_id and "mlkit" in argv:
            start = procid.start_time(pid)
            if start is not None and start >= 0:
                return procid.ProcessRef(pid, start)
    return None
