"""Helpers tests import directly: `from helpers import run_mlkit, REPO`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def trainer_env(**extra: str) -> dict[str, str]:
    """The environment a trainer subprocess gets: this checkout first on PYTHONPATH (the rest of
    PYTHONPATH kept), one thread per process (the CI box has 2 cores and other tests run beside us)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path, **extra}


def run_mlkit(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real `mlkit` command in a subprocess (python -m mlkit), capturing its output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "mlkit", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
    )


def run_on_a_terminal(argv: list[str], *, env: dict[str, str] | None = None, stdout_too: bool = True,
                      timeout: float = 60, columns: int | None = None) -> tuple[int, bytes]:  # fmt: skip
    """Run `argv` with its stderr (and stdout, unless `stdout_too` is False: then a pipe) on a fresh
    pseudo-terminal (`columns` wide, when given); (exit code, everything the terminal showed)."""
    import pty

    leader, follower = pty.openpty()
    if columns is not None:
        import fcntl
        import struct
        import termios

        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.run(
        argv, stdin=subprocess.DEVNULL, stdout=follower if stdout_too else subprocess.PIPE,
        stderr=follower, env=env, timeout=timeout,
    )  # fmt: skip
    os.close(follower)
    screen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the follower side is closed and drained
            break
        if not chunk:
            break
        screen += chunk
    os.close(leader)
    return proc.returncode, screen


def plant_mlkit(tmp_path: Path) -> tuple[Path, Path]:
    """A directory holding a planted `mlkit/` package (what another user could leave in /tmp or a
    shared directory), and the file it creates when it is imported: (directory, marker)."""
    where, marker = tmp_path / "shared", tmp_path / "hijacked"
    (where / "mlkit").mkdir(parents=True)
    (where / "mlkit" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\nraise SystemExit(9)\n")
    return where, marker
