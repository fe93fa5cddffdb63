"""The one helper every subprocess mlkit starts goes through.

argv lists only (a shell appears only when an MLproject command itself needs one, and then it is
`["/bin/sh", "-c", command]` built by the caller), env *overrides* over the current environment
(a `None` value deletes the variable), an explicit cwd, and process groups: a child started with
`new_session=True` leads its own group, so it and everything it starts can be signalled at once.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from mlkit.errors import LaunchError


def _log(level: str, message: str, *args: object) -> None:
    """Log on the "mlkit.proc" logger, importing logging only when the line can be shown."""
    if level == "debug" and "logging" not in sys.modules:
        return  # logging was never set up (that imports it), so nothing could show a debug line
    # import budget: logging loads only when something is logged; a plain mlkit run never loads it
    import logging

    getattr(logging.getLogger("mlkit.proc"), level)(message, *args)


EnvOverrides = Mapping[str, "str | None"]

# `python -m M` and `python -c CODE` put the working directory first on sys.path, so whoever can
# write where mlkit was started (/tmp, a group's shared directory) could plant `mlkit/__init__.py`
# and have it run as the user in every Python process mlkit starts. These start one without it
# (`-P` does the same, but only from Python 3.11); the `mlkit` console script never has it.
_NO_CWD = "import sys; sys.path[:] = [p for p in sys.path if p]; "
_RUN_MODULE = "import runpy; runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)"


def python_code_argv(python: str, code: str, *args: str) -> list[str]:
    """`python -c CODE ARGS`, without the working directory on sys.path."""
    return [python, "-c", _NO_CWD + code, *args]


def python_module_argv(python: str, module: str, *args: str) -> list[str]:
    """`python -m MODULE ARGS`, without the working directory on sys.path."""
    return python_code_argv(python, _RUN_MODULE, module, *args)


def mlkit_argv(python: str, *args: str) -> list[str]:
    """`mlkit ARGS` in `python`, started as the `mlkit` console script starts it (its entry point:
    `-m mlkit` would first load runpy and find the package's __main__, ~10 ms)."""
    return python_code_argv(python, "from mlkit.cli import entry; entry()", *args)


class ProcTimeoutError(LaunchError):
    """A command run through `run()` ran past its timeout and was killed."""


def build_env(overrides: EnvOverrides | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: os.environ) with `overrides` applied; a None value removes the variable."""
    env = dict(os.environ if base is None else base)
    for key, value in (overrides or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    return env


def describe(argv: Sequence[str | os.PathLike[str]]) -> str:
    """The argv as a line a user could paste into a shell."""
    return shlex.join(str(a) for a in argv)


def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: EnvOverrides | None = None,
    cwd: str | os.PathLike[str] | None = None,
    new_session: bool = True,
    stdin: int | IO[Any] | None = None,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    die_with_parent: bool = False,
) -> subprocess.Popen[bytes]:
    """Start `argv` (binary pipes) and return the Popen; `new_session` puts it in its own group.

    `die_with_parent`: the kernel SIGKILLs the child when the thread that started it dies
    (PR_SET_PDEATHSIG; Linux), so it never outlives a supervisor that was killed; start it from a
    thread that lives as long as the child. Raises `LaunchError` when the program does not exist or
    cannot be executed.
    """
    args = [os.fspath(a) for a in argv]
    if not args:
        raise LaunchError("empty command", hint="the entry point's command resolved to nothing")
    _log("debug", "spawn: %s (cwd=%s)", describe(args), cwd)
    try:
        return subprocess.Popen(
            args,
            env=build_env(env),
            cwd=None if cwd is None else os.fspath(cwd),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            start_new_session=new_session,
            close_fds=True,
            preexec_fn=_pdeathsig() if die_with_parent else None,
        )
    except FileNotFoundError as exc:
        missing = exc.filename or args[0]
        if cwd is not None and not Path(cwd).is_dir():
            raise LaunchError(
                f"working directory {cwd} does not exist", hint="check the project directory"
            ) from exc
        raise LaunchError(
            f"command not found: {missing}",
            hint=f"install {args[0]!r} or put it on PATH (the command was: {describe(args)})",
        ) from exc
    except PermissionError as exc:
        raise LaunchError(
            f"cannot execute {args[0]}: permission denied",
            hint=f"make it executable (chmod +x {args[0]}) or run it through its interpreter",
        ) from exc
    except OSError as exc:
        raise LaunchError(
            f"cannot start {args[0]}: {exc}", hint=f"the command was: {describe(args)}"
        ) from exc


def _pdeathsig() -> Any:
    """A preexec_fn that sets PR_SET_PDEATHSIG=SIGKILL in the child; None off Linux. Everything
    it calls is bound before the fork: the child runs one libc call and getppid, nothing that could
    wait on a lock another thread held at the fork."""
    if not sys.platform.startswith("linux"):
        return None
    # import budget: ctypes loads only on Linux, to set PR_SET_PDEATHSIG
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent, getppid, exit_now = os.getpid(), os.getppid, os._exit

    def set_pdeathsig() -> None:
        prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
        if getppid() != parent:  # the parent died before the prctl: follow it now
            exit_now(137)

    return set_pdeathsig


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: EnvOverrides | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    input: bytes | str | None = None,
    capture_output: bool = True,
    text: bool = True,
    check: bool = False,
    grace: float = 2.0,
) -> subprocess.CompletedProcess[Any]:
    """Run `argv` to completion in its own process group and return its CompletedProcess.

    On timeout, Ctrl-C or any other exception the whole group gets SIGTERM, then SIGKILL after
    `grace` seconds. A timeout raises `ProcTimeoutError`; `check=True` raises `LaunchError` for a
    non-zero exit (the message carries the last lines of stderr).
    """
    pipe = subprocess.PIPE if capture_output else None
    proc = spawn(
        argv,
        env=env,
        cwd=cwd,
        new_session=True,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=pipe,
        stderr=pipe,
    )
    data = input.encode() if isinstance(input, str) else input
    out: bytes | str | None
    err: bytes | str | None
    try:
        out, err = proc.communicate(data, timeout=timeout)
    except subprocess.TimeoutExpired:
        terminate_group(proc, grace=grace)
        raise ProcTimeoutError(
            f"{describe(argv)} ran longer than {timeout:g}s and was killed",
            hint="raise the timeout or check why the command hangs",
        ) from None
    except BaseException:
        terminate_group(proc, grace=grace)
        raise
    if text:
        out = out.decode(errors="replace") if isinstance(out, bytes) else out
        err = err.decode(errors="replace") if isinstance(err, bytes) else err
    result = subprocess.CompletedProcess([os.fspath(a) for a in argv], proc.returncode, out, err)
    if check and proc.returncode != 0:
        tail = ""
        if err:
            lines = (err if isinstance(err, str) else err.decode(errors="replace")).strip().splitlines()
            tail = " | ".join(lines[-3:])
        raise LaunchError(
            f"{describe(argv)} failed with exit code {proc.returncode}" + (f": {tail}" if tail else ""),
            hint="run the command by hand to see its full output",
        )
    return result


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to every process in group `pgid`; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:  # a member changed user; signal what we can
        return True


def group_alive(pgid: int) -> bool:
    """True while any process (zombies included) is in group `pgid`."""
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def terminate_group(proc: subprocess.Popen[Any], *, grace: float = 2.0) -> None:
    """SIGTERM the group `proc` leads, SIGKILL it after `grace` s, and reap `proc`."""
    pgid = proc.pid
    signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if proc.poll() is not None and not group_alive(pgid):
            break
        time.sleep(0.02)
    signal_group(pgid, signal.SIGKILL)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - an uninterruptible (D state) process
        _log("warning", "process %s did not die after SIGKILL", proc.pid)
