"""The env cache under real concurrency: 8 processes build once; a SIGKILLed build is never used."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlkit import settings
from mlkit.env import EnvRef, prepare_env
from mlkit.env.cache import MARKER

pytestmark = pytest.mark.slow

PREPARE = """\
import json, sys
from pathlib import Path
from mlkit.env import EnvRef, prepare_env
p = prepare_env(Path(sys.argv[1]), EnvRef("python", Path(sys.argv[1]) / "python_env.yaml"))
print(json.dumps({"path": str(p.path), "reused": p.reused, "manager": p.manager}))
"""

BACKEND = '''\
"""An in-tree PEP 517 backend that waits while $MLKIT_TEST_HOLD exists: a build we can hold."""
import base64, hashlib, os, time, zipfile

def _hold():
    flag = os.environ.get("MLKIT_TEST_HOLD")
    while flag and os.path.exists(flag):
        time.sleep(0.05)

def get_requires_for_build_wheel(config_settings=None):
    return []

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _hold()
    files = {
        "slowpkg/__init__.py": "DONE = True\\n",
        "slowpkg-1.0.dist-info/METADATA": "Metadata-Version: 2.1\\nName: slowpkg\\nVersion: 1.0\\n",
        "slowpkg-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append("slowpkg-1.0.dist-info/RECORD,,")
    files["slowpkg-1.0.dist-info/RECORD"] = "\\n".join(record) + "\\n"
    name = "slowpkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return name
'''


@pytest.fixture
def held_project(tmp_path, kit, wheelhouse, monkeypatch):
    """A project whose env build blocks (inside `uv pip install`) while the returned flag exists."""
    project = tmp_path / "proj"
    kit.write(project / "slowpkg" / "slowbackend.py", BACKEND)
    kit.write(
        project / "slowpkg" / "pyproject.toml",
        '[build-system]\nrequires = []\nbuild-backend = "slowbackend"\nbackend-path = ["."]\n'
        '[project]\nname = "slowpkg"\nversion = "1.0"\n',
    )
    kit.write(project / "python_env.yaml", "dependencies:\n  - ./slowpkg\n  - tinypkg\n")
    flag = tmp_path / "hold"
    flag.write_text("hold")
    monkeypatch.setenv("MLKIT_TEST_HOLD", str(flag))
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))  # no built slowpkg from earlier runs
    return project, flag


def _start(project: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", PREPARE, str(project)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _log() -> str:
    logs = list((settings.env_dir() / "logs").glob("*.log"))
    return logs[0].read_text() if logs else ""


def _wait_for(predicate, timeout=90.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; log:\n{_log()}")


def _builds(log: str) -> int:
    return len(re.findall(r"^--- \S+ build \S+-uv ", log, flags=re.M))


def test_eight_concurrent_runs_build_once(held_project):
    project, flag = held_project
    procs = [_start(project) for _ in range(8)]
    _wait_for(lambda: "uv pip install" in _log(), what="a build to reach uv pip install")
    time.sleep(1.0)  # every other process is now waiting on the lock (or still starting)
    assert _builds(_log()) == 1
    flag.unlink()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert len({r["path"] for r in results}) == 1
    assert sorted(r["reused"] for r in results) == [False] + [True] * 7
    assert _builds(_log()) == 1
    path = Path(results[0]["path"])
    out = subprocess.run([str(path / "bin" / "python"), "-c", "import slowpkg, tinypkg"], capture_output=True)
    assert out.returncode == 0


def test_killed_build_is_never_used_and_rebuilt_cleanly(held_project):
    project, flag = held_project
    builder = _start(project)
    _wait_for(lambda: "uv pip install" in _log(), what="the build to reach uv pip install")
    children = next((settings.env_dir() / ".locks").glob("*.children"))
    _wait_for(lambda: children.read_text().count("\n") >= 2, what="uv to start")
    orphan = int(children.read_text().split()[-1])  # the `uv pip install` process group
    builder.send_signal(signal.SIGKILL)
    builder.wait(timeout=30)
    env_dirs = [p for p in settings.env_dir().iterdir() if p.name.endswith("-uv")]
    assert len(env_dirs) == 1 and not (env_dirs[0] / MARKER).exists()  # half-built, unmarked

    again = _start(project)  # finds the half-built dir: kills the orphaned uv, deletes, rebuilds
    _wait_for(
        lambda: "removing a half-built or broken environment" in _log(),
        what="the half-built env to be removed",
    )
    _wait_for(lambda: not _alive(orphan), timeout=30, what="the orphaned uv to be killed")
    flag.unlink()
    out, err = again.communicate(timeout=180)
    assert again.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["reused"] is False and (Path(result["path"]) / MARKER).is_file()
    assert _builds(_log()) == 2
    check = subprocess.run(
        [str(Path(result["path"]) / "bin" / "python"), "-c", "import slowpkg"], capture_output=True
    )
    assert check.returncode == 0
    assert prepare_env(project, EnvRef("python", project / "python_env.yaml")).reused


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (not reaped yet: its parent was SIGKILLed) counts as dead
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
