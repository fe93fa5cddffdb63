"""Nothing in the GPU ledger is trusted: 4 real `mlkit run`s hold the stand-in's 4 GPUs, the ledger
and the queue are corrupted every way we know, and a 5th run never gets a GPU, never crashes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import trainer_env

HOLD = "import os, sys, time\nprint('up', os.environ.get('CUDA_VISIBLE_DEVICES'), flush=True)\ntime.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 600)\n"
FLAGS = ("--env-manager", "local", "--system-metrics-interval", "0")
DEADLINE = 30  # s: each command's own deadline is the ledger lock's 10 s; plus slack for a loaded box


def _env(base: Path, scenario: str = "four_idle") -> dict[str, str]:
    return trainer_env(
        MLKIT_STATE_DIR=str(base / "state"),
        MLKIT_TRACKING_URI=str(base / "mlruns"),
        MLKIT_CACHE_DIR=str(base / "cache"),
        MLKIT_FAKE_NVML=scenario,
        MLKIT_GPU_POLL_INTERVAL="0.1",
        NO_COLOR="1",
    )


def _project(base: Path) -> Path:
    project = base / "proj"
    project.mkdir(exist_ok=True)
    (project / "hold.py").write_text(HOLD)
    (project / "quick.py").write_text("print('quick run')\n")
    return project


def _start(base: Path, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    # Output to a file, not an unread pipe: a full pipe would stall a long-lived holder.
    log = open(base / f"holder-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlkit", "run", *FLAGS, *args, str(_project(base)), "-e", "hold.py"],
        cwd=base, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    log.close()
    proc.log_path = Path(log.name)  # type: ignore[attr-defined]
    return proc


def _mlkit(
    base: Path, env: dict[str, str], *args: str, timeout: float = DEADLINE
) -> subprocess.CompletedProcess:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "mlkit", *args],
        cwd=base,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    result.elapsed = time.monotonic() - started  # type: ignore[attr-defined]
    return result


def _ledger(base: Path) -> dict:
    path = base / "state" / "gpu-leases.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _wait(predicate, timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _uuids_in_use(procs: list[subprocess.Popen[bytes]]) -> list[str]:
    """The GPUs the holders' entry points got, from their environments (the truth)."""
    from mlkit import procid

    used = []
    for sup in procs:
        for pid in procid.descendants_of(sup.pid):
            env = procid.environ_of(pid) or {}
            if env.get("CUDA_VISIBLE_DEVICES"):
                used.append(env["CUDA_VISIBLE_DEVICES"])
    return used


@pytest.fixture(scope="module")
def holders(tmp_path_factory):
    """4 live `mlkit run --gpus 1` holding the 4 stand-in GPUs."""
    base = tmp_path_factory.mktemp("trust")
    env = _env(base)
    procs = [_start(base, env, "--gpus", "1") for _ in range(4)]
    try:
        _wait(lambda: len(_uuids_in_use(procs)) == 4, what="4 runs to hold 4 GPUs")
        # ...and each supervisor has recorded its entry point in its lease (its last ledger write
        # until it ends), so no holder's own write races the corruption a test makes.
        _wait(lambda: _tracked(base) == 4, what="4 leases to name their entry points")
        assert len(set(_uuids_in_use(procs))) == 4
        yield base, env, procs
    finally:
        for sup in procs:
            if sup.poll() is None:
                sup.send_signal(signal.SIGTERM)
        for sup in procs:
            try:
                sup.wait(timeout=30)
            except subprocess.TimeoutExpired:
                sup.kill()


def _tracked(base: Path) -> int:
    try:
        return sum(1 for lease in _ledger(base).get("leases", []) if lease.get("procs"))
    except ValueError:  # read while being replaced
        return 0


def _host() -> str:
    return os.uname().nodename


def _corrupt(base: Path, kind: str) -> None:
    path = base / "state" / "gpu-leases.json"
    good = _ledger(base) or {"version": 1, "leases": []}
    leases = good.get("leases", [])
    first = dict(leases[0]) if leases else {}
    text: str
    if kind == "garbage":
        text = "\x00\xff not json at all {{{"
    elif kind == "truncated":
        text = json.dumps(good)[: len(json.dumps(good)) // 2]
    elif kind == "empty_valid":
        text = json.dumps({"version": 1, "leases": []})
    elif kind == "not_a_dict":
        text = json.dumps([1, 2, 3])
    elif kind == "pid_abc":
        text = json.dumps({"version": 1, "leases": [{**lease, "pid": "abc"} for lease in leases]})
    elif kind == "since_x_waiter":
        waiter = {"run_id": "w" * 8, "pid": os.getpid(), "pid_start": time.time(), "host": _host(), "since": "x",
                  "request": {"kind": "count", "count": 1}}  # fmt: skip
        text = json.dumps({"version": 1, "leases": leases, "waiters": [waiter, {"run_id": 5}]})
    elif kind == "foreign_host":
        text = json.dumps({"version": 1, "leases": [{**lease, "host": "elsewhere"} for lease in leases]})
    elif kind == "pid_1":
        from mlkit import procid

        start = procid.start_time(1)
        stale = [{**lease, "pid": 1, "pid_start": start, "procs": [], "pgid": None} for lease in leases]
        text = json.dumps({"version": 1, "leases": stale})
    elif kind == "unknown_uuid":
        text = json.dumps(
            {"version": 1, "leases": [{**first, "uuid": "GPU-ffffffff-0000-4000-8000-000000000099"}]}
        )
    else:
        raise AssertionError(kind)
    path.write_text(text)


CORRUPTIONS = [
    "garbage", "truncated", "empty_valid", "not_a_dict", "pid_abc", "since_x_waiter", "foreign_host", "pid_1",
    "unknown_uuid",
]  # fmt: skip


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_no_corruption_double_books_or_crashes(holders, kind):
    base, env, procs = holders
    logs = "\n".join(p.log_path.read_text(errors="replace") for p in procs)  # type: ignore[attr-defined]
    assert all(sup.poll() is None for sup in procs), logs
    assert len(set(_uuids_in_use(procs))) == 4, logs  # every holder's entry point runs before the attack
    _corrupt(base, kind)
    fifth = _mlkit(base, env, "run", *FLAGS, "--gpus", "1", str(_project(base)), "-e", "quick.py")
    assert fifth.returncode == 69, fifth.stderr
    assert "Traceback" not in fifth.stderr
    assert fifth.elapsed < 10 + DEADLINE  # type: ignore[attr-defined]
    waited = _mlkit(
        base, env, "run", *FLAGS, "--gpus", "1", "--wait", "1s", str(_project(base)), "-e", "quick.py"
    )
    assert waited.returncode == 76, waited.stderr
    assert "Traceback" not in waited.stderr
    shown = _mlkit(base, env, "gpus")
    assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr
    assert len(set(_uuids_in_use(procs))) == 4  # the holders still run, each on its own GPU
    if kind in ("pid_abc", "since_x_waiter"):
        assert "dropped: " in fifth.stderr  # a one-line warning naming the record
    if kind in ("garbage", "truncated", "not_a_dict"):
        assert "rebuilt from the live mlkit processes" in fifth.stderr


def test_foreign_and_impostor_leases_do_not_block_and_can_be_released(tmp_path):
    """A lease naming another host or pid 1 holds no GPU; `mlkit gpus` says so; --release clears it."""
    from mlkit import procid

    env = _env(tmp_path)
    (tmp_path / "state").mkdir(mode=0o700)
    uuid = "GPU-f4ce0000-0000-4000-8000-000000000000"
    now = time.time()
    stale = [
        {"uuid": uuid, "run_id": "foreign0run", "pid": 4242, "pid_start": now, "host": "elsewhere", "since": now},
        {"uuid": "GPU-f4ce0001-0000-4000-8000-000000000001", "run_id": "initpid1run", "pid": 1,
         "pid_start": procid.start_time(1), "host": _host(), "since": now},
    ]  # fmt: skip
    (tmp_path / "state" / "gpu-leases.json").write_text(json.dumps({"version": 1, "leases": stale}))
    shown = _mlkit(tmp_path, env, "gpus")
    assert shown.returncode == 0, shown.stderr
    assert "ignored lease of " + uuid + " by run foreign0run (foreign)" in shown.stderr
    assert "by run initpid1run (impostor): pid 1 is alive but is not the mlkit process" in shown.stderr
    assert "mlkit gpus --release initpid1run" in shown.stderr
    watch = subprocess.Popen([sys.executable, "-m", "mlkit", "gpus", "--watch", "-n", "0.2"], env=env,
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    watched = [watch.stdout.readline() for _ in range(6)]  # 4 GPUs, then the ignored entries
    watch.send_signal(signal.SIGINT)
    watch.communicate(timeout=20)
    assert any("ignored lease of " + uuid + " by run foreign0run (foreign)" in line for line in watched)
    run = _mlkit(tmp_path, env, "run", *FLAGS, "--gpus", "0,1", str(_project(tmp_path)), "-e", "quick.py")
    assert run.returncode == 0, run.stderr
    released = _mlkit(tmp_path, env, "gpus", "--release", "initpid1run")
    assert released.returncode == 0, released.stderr
    assert [lease["run_id"] for lease in _ledger(tmp_path)["leases"]] == ["foreign0run"]
    missing = _mlkit(tmp_path, env, "gpus", "--release", "nosuchrun")
    assert missing.returncode == 66 and "Traceback" not in missing.stderr


def test_release_of_another_users_live_run_is_refused(tmp_path):
    """Run as user 65534, `--release` of root's live run: exit 77, the lease stays."""
    shared = Path("/tmp") / f"mlkit-trust-{os.getpid()}"
    shared.mkdir(mode=0o755)
    try:
        os.chmod(shared, 0o1777)
        env = {**_env(shared), "HOME": str(shared)}
        holder = _start(shared, env, "--gpus", "1")
        try:
            _wait(lambda: len(_uuids_in_use([holder])) == 1, what="the run to hold a GPU")
            run_id = _ledger(shared)["leases"][0]["run_id"]
            nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
            # mlkit's core only: uid 65534 cannot read root's site-packages (typer); the CLI maps
            # the error's exit_code as for every MlkitError
            code = (
                "import sys\nfrom mlkit.errors import MlkitError\nfrom mlkit.gpu.ledger import release_leases\n"
                f"try:\n    release_leases({run_id!r})\nexcept MlkitError as e:\n"
                "    print(e, file=sys.stderr); sys.exit(int(e.exit_code))\n"
            )
            result = subprocess.run(
                [*nobody, sys.executable, "-c", code],
                cwd="/", env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
                capture_output=True, text=True, timeout=DEADLINE,
            )  # fmt: skip
            assert result.returncode == 77, result.stderr
            assert "is alive" in result.stderr and "belongs to root" in result.stderr
            assert [lease["run_id"] for lease in _ledger(shared)["leases"]] == [run_id]
        finally:
            holder.send_signal(signal.SIGTERM)
            holder.wait(timeout=30)
    finally:
        subprocess.run(["rm", "-rf", str(shared)], check=False)


def test_killed_supervisor_keeps_its_gpu_until_the_entry_point_is_gone(tmp_path):
    """SIGKILL the supervisor: the entry point dies with it (within 10 s) and, while it lived, no
    second run got its GPU."""
    env = _env(tmp_path, "four_idle")
    # one GPU only: the other three are taken by a list request of a long-lived run
    first = _start(tmp_path, env, "--gpus", "0,")
    try:
        _wait(lambda: len(_uuids_in_use([first])) == 1, what="the first run to hold GPU 0")
        from mlkit import procid

        entry = next(
            p
            for p in procid.descendants_of(first.pid)
            if (procid.environ_of(p) or {}).get("CUDA_VISIBLE_DEVICES")
        )
        first.kill()
        first.wait()
        second = _mlkit(
            tmp_path, env, "run", *FLAGS, "--gpus", "0,", str(_project(tmp_path)), "-e", "quick.py"
        )
        entry_alive_after = procid.start_time(entry) is not None
        if entry_alive_after:  # the entry point still lived: the GPU must not have been handed out
            assert second.returncode == 69, second.stderr
        _wait(lambda: procid.start_time(entry) is None, timeout=10, what="the entry point to die")
    finally:
        if first.poll() is None:
            first.kill()


def test_lease_outlives_a_killed_supervisor_while_the_run_lives(tmp_path):
    """The lease lasts while any process of the run lives: a grandchild in the entry point's group
    (the entry point itself dies with the supervisor) keeps the GPU leased."""
    from mlkit import procid
    from mlkit.gpu import trust

    env = _env(tmp_path)
    project = _project(tmp_path)
    (project / "fork.py").write_text(
        "import os, subprocess, sys, time\n"
        "kid = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "open('kid.pid', 'w').write(str(kid.pid))\nprint('up', flush=True)\ntime.sleep(120)\n"
    )
    sup = subprocess.Popen(
        [sys.executable, "-m", "mlkit", "run", *FLAGS, "--gpus", "1", str(project), "-e", "fork.py"],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _wait(
            lambda: (project / "kid.pid").exists() and (project / "kid.pid").read_text(),
            what="the grandchild",
        )
        kid = int((project / "kid.pid").read_text())
        _wait(lambda: _ledger(tmp_path)["leases"][0].get("pgid"), what="the entry point in the lease")
        sup.kill()
        sup.wait()
        assert procid.start_time(kid) is not None
        other = _mlkit(tmp_path, env, "run", *FLAGS, "--gpus", "4", str(project), "-e", "quick.py")
        assert other.returncode == 69, other.stderr  # one of the 4 is still leased
        os.kill(kid, signal.SIGKILL)
        _wait(lambda: procid.start_time(kid) is None, what="the grandchild to die")
        trust._warned.clear()
        after = _mlkit(tmp_path, env, "run", *FLAGS, "--gpus", "4", str(project), "-e", "quick.py")
        assert after.returncode == 0, after.stderr
    finally:
        if sup.poll() is None:
            sup.kill()


def test_unaccounted_compute_process_keeps_its_gpu(tmp_path):
    """Stand-in scenario `unaccounted`: GPU 2 runs a process no lease accounts for; it is never
    handed out, and `mlkit gpus` says why."""
    env = _env(tmp_path, "unaccounted")
    shown = _mlkit(tmp_path, env, "gpus")
    assert shown.returncode == 0, shown.stderr
    row = next(line for line in shown.stdout.splitlines() if "GPU-f4ce0002" in line)
    assert "not free: pid 2147483392 (not visible here) and no lease accounts for it" in row
    four = _mlkit(tmp_path, env, "run", *FLAGS, "--gpus", "4", str(_project(tmp_path)), "-e", "quick.py")
    assert four.returncode == 69 and "GPU 2 is not free" in four.stderr, four.stderr
    named = _mlkit(tmp_path, env, "run", *FLAGS, "--gpus", "2,", str(_project(tmp_path)), "-e", "quick.py")
    assert named.returncode == 69, named.stderr
    three = _mlkit(tmp_path, env, "run", *FLAGS, "--gpus", "3", str(_project(tmp_path)), "-e", "quick.py")
    assert three.returncode == 0, three.stderr
