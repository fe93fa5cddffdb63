"""`--lock NAME` in a shared state dir: another user's held lock, planted links, a foreign `locks/`.

Real `mlkit run` processes and a real second user (uid 65534), on a private MLKIT_STATE_DIR in a
world-traversable directory (see tests/second_user.py).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from second_user import AVAILABLE, WHY_NOT, make_box, nobody_holding, one_line_error, plant_secret, untouched

from mlkit import settings
from mlkit.errors import UnsafeStateError
from mlkit.runner.lock import lock_path, run_lock

from helpers import run_mlkit

pytestmark = pytest.mark.skipif(not AVAILABLE, reason=WHY_NOT)


@pytest.fixture
def box(monkeypatch: pytest.MonkeyPatch) -> Path:
    with make_box() as directory:
        monkeypatch.setenv("MLKIT_STATE_DIR", str(directory / "state"))
        yield directory


@pytest.fixture
def project(tmp_path: Path) -> Path:
    directory = tmp_path / "proj"
    directory.mkdir()
    (directory / "MLproject").write_text("entry_points:\n  main:\n    command: python hello.py\n")
    (directory / "hello.py").write_text("print('hello')\n")
    return directory


def run_locked(project: Path, cwd: Path, *extra: str) -> tuple:
    argv = ("run", str(project), "--env-manager", "local", "--gpus", "none", "--lock", "x", *extra)
    started = time.monotonic()
    result = run_mlkit(*argv, cwd=cwd, timeout=60)
    return result, time.monotonic() - started


def test_another_users_lock_is_waited_for_until_lock_wait_and_its_holder_named(box, project, tmp_path):
    with run_lock("x"):  # root's mlkit makes the shared state dir and the lock file
        pass
    with nobody_holding(lock_path("x")) as holder:
        result, took = run_locked(project, tmp_path, "--lock-wait", "2s")
        assert took < 12
        assert result.returncode == 75, result.stderr  # LOCKED
        one_line_error(
            result, "lock 'x' is still held by", f"pid {holder.pid} of user nobody", "after waiting 2s"
        )
        result, took = run_locked(project, tmp_path)  # no --lock-wait: at once
        assert took < 10 and result.returncode == 75
        one_line_error(result, "lock 'x' is held by", f"pid {holder.pid} of user nobody")
    result, _ = run_locked(project, tmp_path)  # the other user let go: ours now
    assert result.returncode == 0, result.stderr


def test_a_symlink_at_locks_is_refused_and_nothing_is_made_where_it_points(box):
    elsewhere = box / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    os.close(settings.open_state_dir())
    locks = settings.host_state_dir() / "locks"
    locks.rmdir()
    locks.symlink_to(elsewhere)
    with pytest.raises(UnsafeStateError) as info:
        with run_lock("x"):
            pass
    assert str(locks) in info.value.message and "link" in info.value.message
    assert os.listdir(elsewhere) == []


def test_a_locks_dir_another_user_owns_is_refused(box, project, tmp_path):
    os.close(settings.open_state_dir())
    locks = settings.host_state_dir() / "locks"
    os.chown(locks, 65534, 65534)
    result, _ = run_locked(project, tmp_path)
    one_line_error(result, str(locks), "uid 65534")


def test_a_planted_lock_file_link_keeps_the_target_intact(box):
    secret = plant_secret(box)
    os.close(settings.open_state_dir())
    lock_path("x").symlink_to(secret)
    with pytest.raises(UnsafeStateError):
        with run_lock("x", wait=1):
            pass
    untouched(secret)
