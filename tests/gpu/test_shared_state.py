"""The shared state dir against another user: planted links, FIFOs, foreign dirs, held locks.

Real `mlkit` processes, a real second user (uid 65534 through setpriv) and the stand-in NVML's four
GPUs, on a private MLKIT_STATE_DIR under a world-traversable directory in /tmp. A file outside the
state dir (root's, mode 0600) must never be changed, whatever is planted; a lock held by someone
else ends every wait at its deadline, with the holder named. docs/gpus.md, "Shared state".
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest
from second_user import (
    AVAILABLE,
    WHY_NOT,
    as_nobody,
    make_box,
    nobody_holding,
    one_line_error,
    plant_secret,
    untouched,
)

from mlkit import settings
from mlkit.gpu import ledger
from mlkit.tracking.store import FileStore

from helpers import REPO, run_mlkit

pytestmark = pytest.mark.skipif(not AVAILABLE, reason=WHY_NOT)


@pytest.fixture
def box(monkeypatch: pytest.MonkeyPatch) -> Path:
    with make_box() as directory:
        monkeypatch.setenv("MLKIT_STATE_DIR", str(directory / "state"))
        monkeypatch.setenv("MLKIT_FAKE_NVML", "four_idle")
        yield directory


@pytest.fixture
def secret(box: Path) -> Path:
    return plant_secret(box)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    directory = tmp_path / "proj"
    directory.mkdir()
    (directory / "MLproject").write_text("entry_points:\n  main:\n    command: python hello.py\n")
    (directory / "hello.py").write_text("print('hello')\n")
    FileStore(tmp_path / "mlruns")  # the store exists: `mlkit gc` on no store is a different error
    return directory


def commands(project: Path) -> dict[str, tuple[str, ...]]:
    run = ("run", str(project), "--env-manager", "local", "--system-metrics-interval", "0")
    return {
        "gpus": ("gpus",),
        "run": (*run, "--gpus", "1"),
        "gc": ("gc",),
        "lock": (*run, "--gpus", "none", "--lock", "x"),
    }


def mlkit(*args: str, cwd: Path, timeout: float = 40) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = run_mlkit(*args, cwd=cwd, timeout=timeout)
    return result, time.monotonic() - started


def make_state() -> Path:
    """The state dir as root's mlkit makes it (1777, with locks/)."""
    os.close(settings.open_state_dir())
    return settings.host_state_dir()


# ------------------------------------------------------------------------- planted links


@pytest.mark.parametrize(
    ("where", "kind", "names"),
    [
        ("", "symlink", ["gpus", "run", "lock", "gc"]),
        ("gpu-leases.lock", "symlink", ["gpus", "run", "gc"]),
        ("gpu-leases.json", "symlink", ["gpus", "run", "gc"]),
        ("locks/x.lock", "symlink", ["lock"]),
        ("gpu-leases.lock", "hardlink", ["gpus"]),
        ("gpu-leases.json", "hardlink", ["run"]),
        ("locks/x.lock", "hardlink", ["lock"]),
    ],
)
def test_a_planted_link_never_changes_the_file_it_points_at(
    box, secret, project, tmp_path, where, kind, names
):
    state = settings.host_state_dir()
    if where:
        make_state()
    planted = state / where if where else state
    if kind == "symlink":
        planted.symlink_to(secret)
    else:
        os.link(secret, planted)
    for name in names:
        result, _ = mlkit(*commands(project)[name], cwd=tmp_path)
        one_line_error(result, str(planted), "link")
        untouched(secret)
    assert planted.is_symlink() if kind == "symlink" else planted.stat().st_nlink == 2  # left for the admin


# ------------------------------------------------------------------------- unsafe state dirs


def test_a_state_dir_another_user_owns_is_refused_naming_the_owner(box, project, tmp_path):
    state = settings.host_state_dir()
    state.mkdir(mode=0o755)
    os.chown(state, 65534, 65534)
    for name in ("gpus", "run", "lock"):
        result, _ = mlkit(*commands(project)[name], cwd=tmp_path)
        one_line_error(result, str(state), "owned by", "uid 65534")
        assert "install -d -m 1777 -o root -g root" in result.stderr  # the fix, in the hint
    assert os.listdir(state) == []  # nothing made in it


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o757])
def test_a_state_dir_writable_by_others_without_the_sticky_bit_is_refused(box, project, tmp_path, mode):
    state = settings.host_state_dir()
    state.mkdir()
    state.chmod(mode)
    for name in ("gpus", "lock"):
        result, _ = mlkit(*commands(project)[name], cwd=tmp_path)
        one_line_error(result, str(state), "without the sticky bit")
    assert os.listdir(state) == []


def test_a_user_makes_a_private_state_dir_and_other_users_are_refused_it(box, tmp_path):
    home = box / "home"
    home.mkdir()
    os.chown(home, 65534, 65534)
    state = home / "state"
    made = as_nobody("from mlkit.gpu import ledger\nwith ledger.locked(): pass\n", MLKIT_STATE_DIR=str(state))
    assert made.returncode == 0, made.stderr
    st = state.stat()
    assert st.st_uid == 65534 and stat.S_IMODE(st.st_mode) == 0o700  # private: a single-user box
    assert stat.S_IMODE((state / "gpu-leases.lock").stat().st_mode) == 0o600
    result = run_mlkit("gpus", cwd=tmp_path, env={"MLKIT_STATE_DIR": str(state)}, timeout=60)
    one_line_error(result, str(state), "uid 65534")


def test_root_makes_a_shared_state_dir(box, project, tmp_path):
    result, _ = mlkit(*commands(project)["run"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    state = settings.host_state_dir()
    assert stat.S_IMODE(state.stat().st_mode) == 0o1777
    assert stat.S_IMODE((state / "locks").stat().st_mode) == 0o1777  # made with it: no user owns it
    assert stat.S_IMODE((state / "gpu-leases.lock").stat().st_mode) == 0o666


# ------------------------------------------------------------------------- FIFOs, directories


@pytest.mark.parametrize(
    ("name", "kind", "command"),
    [
        ("gpu-leases.json", "fifo", "gpus"),
        ("gpu-leases.json", "fifo", "run"),
        ("gpu-leases.json", "dir", "gpus"),
        ("gpu-leases.json", "dir", "run"),
        ("gpu-leases.lock", "fifo", "gpus"),
        ("locks/x.lock", "fifo", "lock"),
    ],
)
def test_a_fifo_or_directory_at_a_state_path_is_an_error_not_a_hang(
    box, project, tmp_path, name, kind, command
):
    path = make_state() / name
    os.mkfifo(path) if kind == "fifo" else path.mkdir()
    argv = commands(project)[command]
    if command == "run":
        argv = (*argv, "--wait", "5s")
    result, took = mlkit(*argv, cwd=tmp_path, timeout=30)
    one_line_error(result, str(path), "not a regular file")
    assert took < 20


# ------------------------------------------------------------------------- a lock another user holds


def test_run_with_wait_gives_up_on_a_held_ledger_at_its_deadline(box, project, tmp_path):
    with ledger.locked():
        pass
    with nobody_holding(settings.host_state_dir() / ledger.LOCK_FILE) as holder:
        result, took = mlkit(*commands(project)["run"], "--wait", "3s", cwd=tmp_path, timeout=60)
    assert took < 15
    assert result.returncode == 76, result.stderr  # GPU_WAIT_TIMEOUT: the --wait deadline ran out
    one_line_error(result, "--wait 3s", f"pid {holder.pid} of user nobody", "gpu-leases.lock")


@pytest.mark.parametrize("name", ["gpus", "gc"])
def test_read_only_commands_give_up_on_a_held_ledger_at_their_short_deadline(box, project, tmp_path, name):
    with ledger.locked():
        pass
    with nobody_holding(settings.host_state_dir() / ledger.LOCK_FILE) as holder:
        result, took = mlkit(*commands(project)[name], cwd=tmp_path, timeout=ledger.LOCK_WAIT_S + 30)
    assert took < ledger.LOCK_WAIT_S + 10
    assert result.returncode == 75, result.stderr  # LOCKED
    one_line_error(result, f"pid {holder.pid} of user nobody", "gpu-leases.lock")


# ------------------------------------------------------------------------- another user's ledger


def test_another_users_ledger_is_rewritten_in_place_through_a_checked_descriptor(box):
    """In a sticky dir another user's ledger cannot be renamed over: uid 65534 rewrites root's
    ledger in place; the file stays root's, shared, and holds exactly the new text."""
    with ledger.locked():
        pass
    path = ledger.ledger_path()
    path.write_text('{"version": 1, "leases": []}' + " " * 4096 + "\n")  # longer than what follows
    path.chmod(0o666)
    before = path.stat()
    done = as_nobody("from mlkit.gpu import ledger\nwith ledger.locked() as held: ledger._store(held, [])\n")
    assert done.returncode == 0, done.stderr
    after = path.stat()
    assert (after.st_ino, after.st_uid, stat.S_IMODE(after.st_mode)) == (before.st_ino, 0, 0o666)
    assert json.loads(path.read_text()) == {"version": 1, "leases": []}
    assert path.stat().st_size < 100  # truncated: no tail of the old text


def test_a_ledger_another_user_spoils_never_hands_out_a_gpu_in_use(box):
    """The ledger is 0666 in a shared dir: uid 65534 can overwrite it. A rebuild from the live
    processes cannot read root's /proc/PID/environ as that user, so the kernel decides: a live
    holder keeps an flock on each of its GPUs' files, and no ledger text can take that away."""
    import shutil

    import pynvml

    from mlkit.gpu.reserving import reserve
    from mlkit.gpu.select import GpuRequest

    # the stand-in NVML imports pynvml, in root's site-packages, which uid 65534 may not read
    site = box / "site"
    site.mkdir()
    shutil.copy(pynvml.__file__, site / "pynvml.py")
    lease = reserve(GpuRequest.parse("1"), run_id="a" * 32, owner_pid=os.getpid())
    try:
        (held,) = lease.uuids
        for spoiled in ("{garbage", '{"version": 1, "leases": []}'):
            ledger.ledger_path().chmod(0o666)
            done = as_nobody(
                f"open({str(ledger.ledger_path())!r}, 'w').write({spoiled!r})\n"
                "import os\n"
                "from mlkit.errors import GpuUnavailableError\n"
                "from mlkit.gpu.reserving import reserve\n"
                "from mlkit.gpu.select import GpuRequest\n"
                "try:\n"
                "    reserve(GpuRequest.parse('4'), run_id='b' * 32, owner_pid=os.getpid())\n"
                "    print('GOT 4')\n"
                "except GpuUnavailableError as exc:\n"
                "    print('REFUSED')\n"
                "other = reserve(GpuRequest.parse('3'), run_id='c' * 32, owner_pid=os.getpid())\n"
                "print('GOT', ','.join(other.uuids))\n"
                "other.release()\n",
                PYTHONPATH=f"{REPO}:{site}",
            )
            assert done.returncode == 0, done.stderr[-2000:]
            lines = done.stdout.splitlines()
            assert lines[0] == "REFUSED", (spoiled, done.stdout, done.stderr[-1000:])
            assert lines[1].startswith("GOT ") and held not in lines[1], lines
    finally:
        lease.release()
