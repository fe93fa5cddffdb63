"""An environment cache another user can write to (MLKIT_ENV_DIR=/scratch/envs, mode 1777) is
refused: that user could plant `<hash>-uv/.mlkit-complete` naming their own python, which the next
run would execute, or a `logs/<key>.log` link that the next build would append to."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from second_user import AVAILABLE, NOBODY, WHY_NOT, make_box, one_line_error, plant_secret, untouched

from mlkit.env import EnvRef, prepare_env
from mlkit.env.manager import env_hash
from mlkit.errors import UnsafeStateError

pytestmark = pytest.mark.skipif(not AVAILABLE, reason=WHY_NOT)


def _project(box: Path, kit) -> tuple[Path, EnvRef]:
    project = box / "proj"
    kit.write(project / "python_env.yaml", "dependencies: [tinypkg]\n")
    os.chmod(project, 0o755)
    return project, EnvRef("python", project / "python_env.yaml")


def test_an_env_planted_by_another_user_is_never_run(kit, wheelhouse, monkeypatch, mlkit_cli):
    with make_box() as box:
        shared = box / "envs"
        shared.mkdir(mode=0o1777)
        os.chmod(shared, 0o1777)  # as /scratch on a shared box
        monkeypatch.setenv("MLKIT_ENV_DIR", str(shared))
        project, ref = _project(box, kit)
        key = f"{env_hash(project, ref)}-uv"
        flag = box / "pwned"
        fake = shared / key / "bin" / "python"
        secret = plant_secret(box)
        plant = (
            f"mkdir -p {fake.parent} {shared}/logs && "
            f"printf '#!/bin/sh\\ntouch {flag}\\n' > {fake} && chmod 755 {fake} && "
            f'printf \'{{"python": "{fake}", "python_version": "3.11.7", "created": 1, "hash": "{key[:-3]}", "manager": "uv"}}\' > {shared / key}/.mlkit-complete && '
            f"ln -s {secret} {shared}/logs/{key}.log"
        )
        subprocess.run([*NOBODY, "sh", "-c", plant], check=True, timeout=60)

        with pytest.raises(UnsafeStateError, match="writable by other users"):
            prepare_env(project, ref, "uv")
        result = mlkit_cli("env", "create", str(project), "--env-manager", "uv")
        one_line_error(result, str(shared), "writable by other users")
        assert "MLKIT_ENV_DIR" in result.stderr  # the hint says how to get a cache of one's own
        listed = mlkit_cli("env", "list")
        one_line_error(listed, str(shared))
        subprocess.run([str(fake)], check=True)  # the planted python works: refusing it is what kept it out
        flag.unlink()
        untouched(secret)


def test_an_env_dir_of_another_user_is_refused(kit, wheelhouse, monkeypatch):
    with make_box() as box:
        theirs = box / "theirs"
        theirs.mkdir(mode=0o755)
        os.chown(theirs, 65534, 65534)
        monkeypatch.setenv("MLKIT_ENV_DIR", str(theirs))
        project, ref = _project(box, kit)
        with pytest.raises(UnsafeStateError, match="owned by"):
            prepare_env(project, ref, "uv")
        assert os.listdir(theirs) == []


def test_a_private_env_dir_is_made_unwritable_by_others_whatever_the_umask(kit, wheelhouse, monkeypatch):
    with make_box() as box:
        monkeypatch.setenv("MLKIT_ENV_DIR", str(box / "mine" / "envs"))
        project, ref = _project(box, kit)
        old = os.umask(0o002)  # user private groups: files group-writable by default
        try:
            first = prepare_env(project, ref, "uv")
            again = prepare_env(project, ref, "uv")
        finally:
            os.umask(old)
        assert not first.reused and again.reused
        for path in (box / "mine" / "envs", box / "mine" / "envs" / ".locks", box / "mine" / "envs" / "logs"):
            assert not path.stat().st_mode & 0o022, path


def test_a_conda_package_planted_in_a_shared_cache_dir_is_never_installed(
    tmp_path, kit, conda_channel, monkeypatch
):
    """MLKIT_CACHE_DIR holds the extracted conda packages every build hard-links from: another user
    who can write there plants `conda-pkgs/hello-1.0-0/bin/hello`, and root's next build installed it."""
    with make_box() as box:
        project = tmp_path / "proj"
        kit.write(project / "conda.yaml", f"channels: [{conda_channel}]\ndependencies: [world]\n")
        ref = EnvRef("conda", project / "conda.yaml")
        private = prepare_env(project, ref, "conda")  # root's own cache: the layout to plant
        assert (
            subprocess.run([str(private.path / "bin" / "world")], capture_output=True, text=True).stdout
            == "world\n"
        )

        shared = box / "cache"
        shared.mkdir()
        os.chmod(shared, 0o1777)
        planted = shared / "conda-pkgs"
        subprocess.run(
            ["cp", "-r", str(Path(os.environ["MLKIT_CACHE_DIR"]) / "conda-pkgs"), str(planted)], check=True
        )
        (planted / "world-1.2-0" / "bin" / "world").write_text("#!/bin/sh\necho planted\n")
        subprocess.run(["chown", "-R", "65534:65534", str(planted)], check=True)  # the other user's files
        monkeypatch.setenv("MLKIT_CACHE_DIR", str(shared))
        monkeypatch.setenv("MLKIT_ENV_DIR", str(tmp_path / "envs2"))

        with pytest.raises(UnsafeStateError, match="writable by other users") as err:
            prepare_env(project, ref, "conda")
        assert "MLKIT_CACHE_DIR" in (err.value.hint or "")
        assert not any((tmp_path / "envs2").glob("*-conda/bin/world"))
