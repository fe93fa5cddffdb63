"""A real second user (uid 65534, through setpriv) for shared-state tests: `from second_user import ...`.

pytest's tmp_path lives under a 0700 dir that uid 65534 cannot enter, so these tests work in a
world-traversable directory in /tmp (`make_box`) and point MLKIT_STATE_DIR into it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from helpers import REPO

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
SECRET = "root's own file\n"
AVAILABLE = os.geteuid() == 0 and bool(shutil.which("setpriv")) and bool(shutil.which("flock"))
WHY_NOT = "needs root, setpriv and flock (a real second user)"


@contextmanager
def make_box() -> Iterator[Path]:
    """A world-traversable (0755) directory in /tmp, removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="mlkit-shared-", dir="/tmp"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def plant_secret(directory: Path) -> Path:
    """A root-owned 0600 file with content: what a planted link points at."""
    path = directory / "secret"
    path.write_text(SECRET)
    path.chmod(0o600)
    return path


def untouched(secret: Path) -> None:
    st = secret.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    assert secret.read_text() == SECRET


def as_nobody(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Python `code` run by uid 65534 (mlkit's core only: that user cannot read root's site-packages)."""
    return subprocess.run(
        [*NOBODY, sys.executable, "-c", code], cwd="/", env={**os.environ, "PYTHONPATH": str(REPO), **env},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def is_held(path: Path) -> bool:
    """Does someone hold an flock on `path`?"""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@contextmanager
def nobody_holding(path: Path, seconds: int = 60) -> Iterator[subprocess.Popen[bytes]]:
    """uid 65534 holds an flock on `path` (`flock FILE sleep N`) for the block; killed after it."""
    child = subprocess.Popen([*NOBODY, "flock", str(path), "sleep", str(seconds)], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not is_held(path):
            assert child.poll() is None and time.monotonic() < deadline, "the other user never took the lock"
            time.sleep(0.05)
        yield child
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)  # flock's `sleep` child holds the lock too
        child.wait(timeout=10)


def one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """The command failed with exactly one `Error:` line holding `words`, and no traceback."""
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    for word in words:
        assert word in errors[0], result.stderr
    return errors[0]
