"""The one exception hierarchy and the exit-code enum.

Core code raises `MlkitError` subclasses with a one-line message that names the file, the key and
what is wrong, plus a `hint` that says how to fix it. Only `mlkit/cli` turns them into output and an
exit code. Every code below is documented in docs/exit-codes.md and tested.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes of the `mlkit` command. A run's entry point passes its own code through."""

    OK = 0
    FAILURE = 1  # a runtime error inside mlkit (store I/O, a subprocess mlkit needed failed)
    USAGE = 2  # bad flags, bad MLproject / conda.yaml / parameter values: fix the input
    PROMOTE_KEPT = 3  # `mlkit models promote`: the candidate was not better; nothing changed
    NOT_FOUND = 66  # run, experiment, model, version or file does not exist (EX_NOINPUT)
    SLURM_UNAVAILABLE = (
        68  # --backend slurm: no Slurm client here or its controller is unreachable (EX_NOHOST)
    )
    GPU_UNAVAILABLE = 69  # not enough free GPUs and no --wait (EX_UNAVAILABLE)
    ENV_FAILED = 73  # the environment could not be built (EX_CANTCREAT)
    LOCKED = 75  # --lock NAME is held by a live run (EX_TEMPFAIL: try again later)
    NO_PERMISSION = 77  # `mlkit gpus --release` of another user's live run, not as root (EX_NOPERM)
    GPU_WAIT_TIMEOUT = 76  # --wait ran out before enough GPUs were free
    TIMEOUT = 124  # --timeout killed the run (as timeout(1) does)
    INTERRUPTED = 130  # Ctrl-C (SIGINT); SIGTERM/SIGHUP give 128 + the signal number


class MlkitError(Exception):
    """Base of every error mlkit reports to a user: a message, a hint and an exit code."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(MlkitError):
    """Bad flags or arguments on the command line."""

    exit_code = ExitCode.USAGE


class ProjectError(MlkitError):
    """An MLproject file, an entry point or a parameter value is wrong."""

    exit_code = ExitCode.USAGE


class EnvSpecError(MlkitError):
    """conda.yaml / python_env.yaml / conda-lock.yml is malformed."""

    exit_code = ExitCode.USAGE


class EnvBuildError(MlkitError):
    """An environment could not be solved, installed or activated."""

    exit_code = ExitCode.ENV_FAILED


class StoreError(MlkitError):
    """The tracking store could not be read or written."""

    exit_code = ExitCode.FAILURE


class MalformedMetricError(StoreError):
    """A metric file holds a line that is not `<timestamp> <value> <step>` (not a torn last line):
    MLflow cannot read that metric either. A search says so rather than leave the run out."""


class UnsafeStateError(MlkitError):
    """A shared state path (state dir, ledger, lock file) is not safe to use: a link, a FIFO,
    another user's directory. mlkit refuses it rather than write through it."""

    exit_code = ExitCode.FAILURE


class InvalidInputError(MlkitError):
    """A key, value, name or path given to the store or registry is not allowed."""

    exit_code = ExitCode.USAGE


class NotFoundError(MlkitError):
    """A run, experiment, model, version or artifact does not exist."""

    exit_code = ExitCode.NOT_FOUND


class GpuUnavailableError(MlkitError):
    """Not enough GPUs match the request right now (or at all on this machine)."""

    exit_code = ExitCode.GPU_UNAVAILABLE


class GpuWaitTimeoutError(MlkitError):
    """--wait ended before enough GPUs were free."""

    exit_code = ExitCode.GPU_WAIT_TIMEOUT


class LockedError(MlkitError):
    """A named run lock is held by a live process."""

    exit_code = ExitCode.LOCKED


class LaunchError(MlkitError):
    """The entry point could not be started."""

    exit_code = ExitCode.FAILURE


class SlurmUnavailableError(MlkitError):
    """`--backend slurm`: the Slurm client is not installed, or its controller does not answer."""

    exit_code = ExitCode.SLURM_UNAVAILABLE
