"""A damaged cache (a garbage marker, a FIFO in its place, a link to somewhere else, leftovers of a
killed prune) is listed, pruned and rebuilt without a traceback, a hang or a file touched outside."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mlkit import settings
from mlkit.env import EnvRef, prepare_env
from mlkit.env.cache import MARKER, remove_tree

from helpers import REPO


def _built(tmp_path: Path, kit):
    project = tmp_path / "proj"
    kit.write(project / "python_env.yaml", "dependencies: [tinypkg]\n")
    ref = EnvRef("python", project / "python_env.yaml")
    return project, ref, prepare_env(project, ref, "uv")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    # a guard, not a measurement: a marker that blocks the reader would otherwise hang the suite
    return subprocess.run(
        [sys.executable, "-m", "mlkit", *args], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip


@pytest.mark.parametrize(
    "marker", ["[]", '"x"', '{"created": "abc"}', '{"created": null}', '{"python": [1]}', '{"python": 5}']
)
def test_a_garbage_marker_is_an_incomplete_env_rebuilt(tmp_path, kit, wheelhouse, marker):
    project, ref, first = _built(tmp_path, kit)
    (first.path / MARKER).write_text(marker)

    listed = _cli("env", "list", "--json")
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
    assert [e["complete"] for e in json.loads(listed.stdout)["envs"]] == [False]
    again = prepare_env(project, ref, "uv")
    assert not again.reused and again.path == first.path
    assert json.loads((first.path / MARKER).read_text())["python"] == str(first.python)


def test_a_fifo_in_place_of_the_marker_is_not_waited_on(tmp_path, kit, wheelhouse):
    project, ref, first = _built(tmp_path, kit)
    (first.path / MARKER).unlink()
    os.mkfifo(first.path / MARKER)

    listed = _cli("env", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [e["complete"] for e in json.loads(listed.stdout)["envs"]] == [False]
    assert not prepare_env(project, ref, "uv").reused


def test_prune_unlinks_a_link_in_the_cache_and_never_follows_it(tmp_path):
    outside = tmp_path / "outside"
    (outside / "keep").mkdir(parents=True)
    (outside / "keep" / "file").write_text("precious")
    os.utime(outside, (0, 0))
    root = settings.env_dir()
    root.mkdir(parents=True)
    (root / "deadbeefdeadbeef-uv").symlink_to(outside)

    pruned = _cli("env", "prune", "--older-than", "0", "--json")
    assert pruned.returncode == 0, pruned.stderr
    assert (outside / "keep" / "file").read_text() == "precious"
    assert sorted(os.listdir(root)) == [".locks"]  # the link is gone, no `.trash-*` link left behind


def test_prune_removes_what_a_killed_prune_left_aside(tmp_path, kit, wheelhouse):
    _project, _ref, first = _built(tmp_path, kit)
    dead = subprocess.Popen(["sleep", "60"])
    dead.send_signal(signal.SIGKILL)
    dead.wait()
    aside = first.path.with_name(f".trash-{first.path.name}-{dead.pid}-12345")
    os.rename(first.path, aside)  # what remove_tree does before its rmtree, when it is killed there
    live = first.path.with_name(f".trash-other-uv-{os.getpid()}-1")  # a deletion still under way
    live.mkdir()

    pruned = _cli("env", "prune", "--json")
    assert pruned.returncode == 0, pruned.stderr
    assert not aside.exists() and live.is_dir()
    assert json.loads(pruned.stdout)["bytes_freed"] > 0


def test_remove_tree_of_a_link_removes_the_link_only(tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    (target / "file").write_text("x")
    link = tmp_path / "link"
    link.symlink_to(target)
    remove_tree(link)
    assert not os.path.lexists(link) and (target / "file").read_text() == "x"
    assert [p.name for p in tmp_path.iterdir()] == ["target"]
