"""`mlkit run --on-finish CMD`: the user's command, run through /bin/sh after the run ends (like
cron's lines or task-spooler's TS_ONFINISH), with the run's outcome in its environment."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from mlkit import proc

OUTPUT_LIMIT = 16_000  # characters of the hook's output kept (the end of it)
TIMEOUT_EXIT = 124  # as timeout(1)
LAUNCH_FAILED_EXIT = 127  # as a shell's "command not found"


@dataclass(frozen=True)
class HookResult:
    """What the hook did: its exit code (124 timed out, 127 could not start), its output, why it failed."""

    command: str
    exit_code: int
    output: str
    error: str | None  # None when the hook exited 0

    @property
    def ok(self) -> bool:
        """True when the hook ran and exited 0."""
        return self.error is None


def hook_env(
    *, run_id: str, status: str, exit_code: int | None, run_dir: Path | str, experiment_id: str
) -> dict[str, str]:
    """The variables the hook gets: MLKIT_RUN_ID, MLKIT_STATUS, MLKIT_EXIT_CODE, MLKIT_RUN_DIR, MLKIT_EXPERIMENT_ID."""
    return {
        "MLKIT_RUN_ID": str(run_id),
        "MLKIT_STATUS": str(status),
        "MLKIT_EXIT_CODE": "" if exit_code is None else str(exit_code),
        "MLKIT_RUN_DIR": str(run_dir),
        "MLKIT_EXPERIMENT_ID": str(experiment_id),
    }


def run_on_finish(
    command: str,
    *,
    run_id: str,
    status: str,
    exit_code: int | None,
    run_dir: Path | str,
    experiment_id: str,
    timeout: float = 300,
) -> HookResult:
    """Run `command` with `/bin/sh -c`; never raises. After `timeout` s its process group is killed."""
    env = hook_env(
        run_id=run_id, status=status, exit_code=exit_code, run_dir=run_dir, experiment_id=experiment_id
    )
    try:
        child = proc.spawn(
            ["/bin/sh", "-c", command],
            env=env,
            new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    except Exception as exc:  # noqa: BLE001 - a hook must never break the run that already ended
        return HookResult(command, LAUNCH_FAILED_EXIT, "", f"--on-finish could not start: {exc}")
    try:
        raw, _ = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate_group(child, grace=2.0)
        try:
            raw, _ = child.communicate(timeout=5)  # what it printed before it was killed
        except (subprocess.TimeoutExpired, OSError, ValueError):
            raw = b""
        error = f"--on-finish ran longer than {timeout:g}s and was killed"
        return HookResult(command, TIMEOUT_EXIT, _tail(raw or b""), error)
    except Exception as exc:  # noqa: BLE001
        proc.terminate_group(child, grace=0.5)
        return HookResult(command, LAUNCH_FAILED_EXIT, "", f"--on-finish failed: {exc}")
    code = child.returncode
    if code < 0:  # killed by a signal: report it as a shell does, 128 + the signal number
        return HookResult(command, 128 - code, _tail(raw), f"--on-finish was killed by signal {-code}")
    failed = None if code == 0 else f"--on-finish exited with code {code}"
    return HookResult(command, code, _tail(raw), failed)


def _tail(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace")
    return text if len(text) <= OUTPUT_LIMIT else "…" + text[-OUTPUT_LIMIT:]
