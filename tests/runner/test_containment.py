"""No process outlives its run: `setsid`, double forks and `env -i setsid` escapees are stopped when
`mlkit run` ends (the supervisor is a child subreaper), and the entry point dies with a SIGKILLed
supervisor (PR_SET_PDEATHSIG)."""

from __future__ import annotations

import os
import signal
import time

import pytest

ESCAPES = {
    "setsid": "setsid sleep 777 &\necho $! > escapee.pid\n",
    "env_i_setsid": "env -i setsid sh -c 'echo $$ > escapee.pid; exec sleep 777' &\nsleep 0.5\n",
    "double_fork": "( ( sleep 777 & echo $! > escapee.pid ) & )\nsleep 0.5\n",
}


def _alive(pid: int) -> bool:
    from mlkit import procid

    return procid.start_time(pid) is not None


def _wait_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("how", list(ESCAPES))
def test_escapees_do_not_outlive_the_run(make_project, mlkit_run, only_run, how):
    project = make_project(
        {"MLproject": "entry_points:\n  main:\n    command: sh escape.sh\n", "escape.sh": ESCAPES[how]}
    )
    result = mlkit_run(str(project))
    assert result.returncode == 0, result.stderr
    pid_file = project / "escapee.pid"
    assert pid_file.exists(), result.stderr
    pid = int(pid_file.read_text().split()[0])
    try:
        assert _wait_dead(pid, 3), f"{how}: escapee {pid} outlived its run"
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    assert only_run().info.status == "FINISHED"


def test_entry_point_dies_with_a_killed_supervisor(make_project, start_mlkit, wait_for):
    project = make_project(
        {"hold.py": "import os, time\nopen('entry.pid', 'w').write(str(os.getpid()))\ntime.sleep(120)\n"}
    )
    sup = start_mlkit(str(project), "-e", "hold.py")
    pid_file = project / "entry.pid"
    wait_for(lambda: pid_file.exists() and pid_file.read_text(), what="the entry point to start")
    entry = int(pid_file.read_text())
    sup.kill()
    sup.wait()
    try:
        assert _wait_dead(entry, 10), "the entry point outlived its SIGKILLed supervisor"
    finally:
        if _alive(entry):
            os.kill(entry, signal.SIGKILL)
