"""A build that fills the disk (a real small tmpfs as MLKIT_ENV_DIR) ends with one line saying so,
exit 73, and leaves no half-built environment; with room again the next build succeeds."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import run_mlkit


@pytest.fixture
def tiny_fs(tmp_path: Path, request) -> Iterator[Path]:
    """A tmpfs of `request.param` (root only), always unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={request.param}", "tmpfs", str(mount)])
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


# sizes that run out at different steps: the venv, the requirements, mlkit's runtime copy, the log
@pytest.mark.parametrize("tiny_fs", ["64k", "1m", "2m", "2500k", "3m", "3500k"], indirect=True)
def test_a_full_disk_is_one_line_and_leaves_nothing_half_built(
    tmp_path, kit, wheelhouse, tiny_fs, monkeypatch
):
    project = tmp_path / "proj"
    kit.write(project / "python_env.yaml", "dependencies: [tinypkg]\n")
    envs = tiny_fs / "envs"
    monkeypatch.setenv("MLKIT_ENV_DIR", str(envs))

    result = run_mlkit("env", "create", str(project), "--env-manager", "uv")
    assert "Traceback" not in result.stderr, result.stderr
    if result.returncode == 0:  # it fitted
        return
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert result.returncode == 73 and len(errors) == 1, result.stderr
    assert "disk is full" in errors[0] and len(errors[0]) < 400, result.stderr
    assert [p.name for p in envs.iterdir() if not p.name.startswith(".") and p.name != "logs"] == []

    monkeypatch.setenv("MLKIT_ENV_DIR", str(tmp_path / "roomy"))
    assert run_mlkit("env", "create", str(project), "--env-manager", "uv").returncode == 0
