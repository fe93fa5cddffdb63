"""run_lock: real processes contending for a named lock, waiting for it, and a SIGKILLed holder."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlkit.errors import ExitCode, LockedError, UsageError
from mlkit.runner.lock import lock_path, run_lock

HOLDER = """
import sys, time
from mlkit.runner.lock import run_lock
with run_lock(sys.argv[1]) as lock:
    lock.set_run_id("run-abc123")
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def start_holder(name: str, seconds: float) -> subprocess.Popen[str]:
    """A separate process that takes the lock, says 'held', and keeps it for `seconds`."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, name, str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline() == "held\n"
    return child


@pytest.fixture
def holders():
    started: list[subprocess.Popen[str]] = []
    yield started
    for child in started:
        if child.poll() is None:
            child.kill()
        child.wait()


def test_second_holder_fails_at_once(holders) -> None:
    holders.append(holder := start_holder("nightly", 60))
    t0 = time.monotonic()
    with pytest.raises(LockedError) as info:
        with run_lock("nightly"):
            pytest.fail("got a lock another process holds")
    assert time.monotonic() - t0 < 2
    assert info.value.exit_code == ExitCode.LOCKED
    assert info.value.message.startswith(
        f"lock 'nightly' is held by pid {holder.pid} (run run-abc123) since "
    )
    assert "--lock-wait" in info.value.hint
    with run_lock("other-name"):  # other names are independent
        pass


def test_wait_gets_the_lock_when_the_holder_exits(holders) -> None:
    holders.append(holder := start_holder("nightly", 1.0))
    statuses: list[str] = []
    t0 = time.monotonic()
    with run_lock("nightly", wait=30, on_wait=statuses.append) as lock:
        assert f'"pid": {os.getpid()}' in lock.path.read_text()  # we hold it now
        assert lock.name == "nightly"
    assert holder.wait(timeout=30) == 0  # the first holder finished normally
    assert 0.3 < time.monotonic() - t0 < 20
    assert statuses and statuses[0].startswith(
        f"waiting for lock 'nightly', held by pid {holder.pid} (run run-abc123)"
    )
    assert "\n" not in statuses[0]


def test_wait_runs_out(holders) -> None:
    holders.append(start_holder("nightly", 60))
    with pytest.raises(LockedError) as info:
        with run_lock("nightly", wait=0.5):
            pass
    assert "is still held by pid" in info.value.message and "after waiting 0.5s" in info.value.message


def test_sigkilled_holder_lock_is_taken_over(holders) -> None:
    holders.append(holder := start_holder("nightly", 60))
    with pytest.raises(LockedError):
        with run_lock("nightly"):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    t0 = time.monotonic()
    with run_lock("nightly") as lock:  # no wait needed: the kernel released the dead holder's flock
        assert time.monotonic() - t0 < 1
        lock.set_run_id("mine")
        assert f'"pid": {os.getpid()}' in lock.path.read_text()


def test_contender_process_exits_locked(holders) -> None:
    """A second real process gets LockedError (exit code 75 through the error's exit_code)."""
    holders.append(start_holder("nightly", 60))
    code = (
        "import sys\nfrom mlkit.errors import LockedError\nfrom mlkit.runner.lock import run_lock\n"
        "try:\n    run_lock('nightly').__enter__()\nexcept LockedError as e:\n    print(e.message); sys.exit(e.exit_code)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 75 and "is held by pid" in done.stdout


def test_same_process_cannot_take_it_twice_and_release_works() -> None:
    with run_lock("job"):
        with pytest.raises(LockedError):
            with run_lock("job"):
                pass
    with run_lock("job") as again:
        assert again.path == lock_path("job")
    assert lock_path("job").read_text() == ""  # the holder's details are cleared on release


def test_lock_files_are_shared_between_users(isolated: Path) -> None:
    with run_lock("shared") as lock:
        assert lock.path == isolated / "state" / "locks" / "shared.lock"
        assert stat.S_IMODE(lock.path.stat().st_mode) == 0o666
        assert stat.S_IMODE(lock.path.parent.stat().st_mode) == 0o1777


@pytest.mark.parametrize("name", ["", "a/b", "../x", ".hidden", "-x", "a b", "x" * 101, "nightly\n"])
def test_bad_lock_names(name: str) -> None:
    with pytest.raises(UsageError) as info:
        with run_lock(name):
            pass
    assert "a lock name may hold only" in info.value.message and "--lock" in info.value.hint
