"""A real second user (uid 65534 through setpriv) runs a docker_env project: everything the
container writes into that user's store belongs to that user, never to root.

docker only: the test daemon's private socket is opened to that user for the test. Rootless
podman needs subordinate ids and a home for the user, which this machine kind does not set up;
the podman runs of test_container_runs.py check that store files belong to the caller (root).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import missing
from ctr_support import BASE_TAG, MLKIT_IN_IMAGE, REPO
from second_user import AVAILABLE, WHY_NOT, make_box

pytestmark = pytest.mark.container

RUN = """
import json, sys
from pathlib import Path
from mlkit.runner.options import RunOptions
from mlkit.runner.session import run_project
result = run_project(RunOptions(project_dir=Path(sys.argv[1]), gpus="none", system_metrics_interval=0,
                                container_engine="docker"))
print(json.dumps({"status": result.status, "exit_code": result.exit_code, "run_id": result.run_id}))
"""


@contextmanager
def _run_as(container_engines, uid: int, train_py: str) -> Iterator[Path]:
    """`run_project` of a docker_env project whose entry point is `train_py`, by the real user
    `uid` (setpriv) in a box of its own; checks the run FINISHED and gives its directory."""
    env = container_engines["docker"]
    if isinstance(env, str):
        missing(env)
    sock = Path(env["DOCKER_HOST"].removeprefix("unix://"))
    before = sock.stat().st_mode, sock.parent.stat().st_mode
    with make_box() as box:
        try:
            sock.parent.chmod(0o711)
            sock.chmod(0o666)  # this user may use the test daemon, as a member of `docker` would
            proj = box / "proj"
            proj.mkdir()
            (proj / "MLproject").write_text(
                f"name: p\ndocker_env:\n  image: {BASE_TAG}\n"
                + textwrap.indent(MLKIT_IN_IMAGE.strip(), "  ")
                + "\nentry_points:\n  main:\n    command: python train.py\n"
            )
            (proj / "train.py").write_text(train_py)
            home = box / "home"
            home.mkdir()
            os.chown(home, uid, uid)
            who = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
            done = subprocess.run(
                [*who, sys.executable, "-c", RUN, str(proj)], cwd=home, capture_output=True, text=True,
                env={**os.environ, **env, "PYTHONPATH": str(REPO), "HOME": str(home),
                     "MLKIT_TRACKING_URI": str(home / "mlruns"), "MLKIT_ENV_DIR": str(home / "envs"),
                     "MLKIT_STATE_DIR": str(home / "state"), "MLKIT_CACHE_DIR": str(home / "cache")},
                timeout=120,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            result = json.loads(done.stdout.strip().splitlines()[-1])
            assert (result["status"], result["exit_code"]) == ("FINISHED", 0), done.stderr
            yield home / "mlruns" / "0" / result["run_id"]
        finally:
            sock.chmod(stat.S_IMODE(before[0]))
            sock.parent.chmod(stat.S_IMODE(before[1]))


@pytest.mark.skipif(not AVAILABLE, reason=WHY_NOT)
def test_files_the_container_writes_belong_to_the_user_who_ran_mlkit(container_engines):
    train_py = (
        "import os, mlkit\n"
        "mlkit.log_metric('loss', 0.5)\n"
        "run = os.path.join(os.environ['MLKIT_TRACKING_URI'], os.environ['MLKIT_EXPERIMENT_ID'],"
        " os.environ['MLKIT_RUN_ID'])\n"
        "open(os.path.join(run, 'artifacts', 'inside.txt'), 'w').write(str(os.getuid()))\n"
    )
    with _run_as(container_engines, 65534, train_py) as run_dir:
        assert (run_dir / "artifacts" / "inside.txt").read_text() == "65534"
        assert (run_dir / "metrics" / "loss").is_file()
        owners = {(p.stat().st_uid, p.stat().st_gid) for p in run_dir.rglob("*")}
        assert owners == {(65534, 65534)}


@pytest.mark.skipif(not AVAILABLE, reason=WHY_NOT)
def test_a_user_the_image_does_not_know_gets_a_home_it_can_write(container_engines):
    """uid 4242 is not in the image's passwd: the engine alone would set HOME=/, which that user
    cannot write, and anything caching under ~ (pip, torch.hub, matplotlib) fails. mlkit sets
    HOME=/tmp for such a user (an image's own ENV HOME, or the project's, is left alone)."""
    train_py = (
        "import os, mlkit\n"
        "cache = os.path.join(os.path.expanduser('~'), '.cache', 'tool')\n"
        "os.makedirs(cache)\n"
        "open(os.path.join(cache, 'x'), 'w').write('cached')\n"
        "mlkit.log_param('home', os.environ['HOME'])\n"
    )
    with _run_as(container_engines, 4242, train_py) as run_dir:
        assert (run_dir / "params" / "home").read_text() == "/tmp"
