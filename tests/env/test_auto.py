"""`auto`: the in-place check (conda/PyPI names, conda version semantics) and what it decides."""

from __future__ import annotations

import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest

from mlkit import settings
from mlkit.env import EnvRef, prepare_env
from mlkit.env.check import check_current
from mlkit.env.spec import load_spec
from mlkit.errors import EnvSpecError, UsageError

PY = ".".join(map(str, sys.version_info[:2]))
YAML_VERSION = version("PyYAML")
YAML_MM = ".".join(YAML_VERSION.split(".")[:2])


def spec_of(tmp_path: Path, kit, text: str):
    f = kit.write(tmp_path / "conda.yaml", text)
    return load_spec(tmp_path, EnvRef("conda", f))


def test_satisfied_runs_in_place_without_creating_anything(tmp_path, kit):
    f = kit.write(
        tmp_path / "conda.yaml",
        f"dependencies:\n  - python={PY}\n  - pip\n  - pyyaml>={YAML_MM}\n  - pip:\n    - packaging>=20\n    - PyYAML\n",
    )
    prepared = prepare_env(tmp_path, EnvRef("conda", f))
    assert prepared.manager == "local" and prepared.path is None and not prepared.reused
    assert prepared.python == Path(sys.executable)
    assert prepared.message == "using the current environment: it satisfies conda.yaml (3 packages)"
    assert prepared.env_vars["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    assert prepared.tags["mlkit.env.requested"] == "auto" and prepared.tags["mlkit.env.hash"] == prepared.hash
    assert not settings.env_dir().exists()  # nothing built, nothing cached


def test_check_is_fast(tmp_path, kit):
    spec = spec_of(
        tmp_path, kit, f"dependencies:\n  - python>={PY}\n  - pyyaml\n  - packaging\n  - pip:\n    - pytest\n"
    )
    check_current(spec)  # warm imports
    started = time.perf_counter()
    for _ in range(10):
        result = check_current(spec)
    assert result.satisfied
    assert (time.perf_counter() - started) / 10 < 0.1


@pytest.mark.parametrize(
    ("dep", "ok"),
    [
        (f"pyyaml={YAML_MM}", True),  # conda's `=` is a prefix match: 6.0 matches 6.0.1
        (f"pyyaml {YAML_MM}.*", True),
        (f"pyyaml=={YAML_VERSION}", True),
        ("pyyaml>=999", False),
        ("pyyaml=1", False),
        ("pyyaml<1|>=5", True),
        ("no-such-package-here", False),
        (f"python={PY}", True),
        ("python=2.7", False),
        ("python>=3.8,<4", True),
    ],
)
def test_conda_version_semantics(tmp_path, kit, dep, ok):
    result = check_current(spec_of(tmp_path, kit, f"dependencies:\n  - {dep}\n"))
    assert result.satisfied is ok, result.reason


def test_conda_names_map_to_pypi(tmp_path, kit, monkeypatch):
    site = tmp_path / "site"
    (site / "torch-2.3.1+cu121.dist-info").mkdir(parents=True)
    (site / "scikit_learn-1.4.2.dist-info").mkdir()
    monkeypatch.setattr(sys, "path", [str(site), *sys.path])
    assert check_current(spec_of(tmp_path, kit, "dependencies: [pytorch=2.3, scikit-learn>=1.2]\n")).satisfied
    assert check_current(spec_of(tmp_path, kit, "dependencies: ['pytorch>=2.3,<2.4']\n")).satisfied
    assert not check_current(spec_of(tmp_path, kit, "dependencies: [pytorch=2.4]\n")).satisfied
    result = check_current(spec_of(tmp_path, kit, "dependencies: ['pytorch=2.4']\n"))
    assert "pytorch=2.4" in result.reason and "2.3.1" in result.reason


def test_pip_requirements_and_markers(tmp_path, kit):
    assert check_current(spec_of(tmp_path, kit, "dependencies:\n  - pip:\n    - packaging>=20\n")).satisfied
    skipped = "dependencies:\n  - pip:\n    - nothere; python_version < '3'\n"
    assert check_current(spec_of(tmp_path, kit, skipped)).satisfied
    result = check_current(spec_of(tmp_path, kit, "dependencies:\n  - pip:\n    - packaging>=999\n"))
    assert not result.satisfied and "packaging>=999" in result.reason


def test_unknown_manager_is_a_usage_error(tmp_path, kit):
    f = kit.write(tmp_path / "conda.yaml", "dependencies: [python]\n")
    with pytest.raises(UsageError, match="--env-manager 'virtualenv': unknown"):
        prepare_env(tmp_path, EnvRef("conda", f), "virtualenv")


def test_local_does_no_checks(tmp_path, kit):
    f = kit.write(tmp_path / "conda.yaml", "dependencies: [no-such-thing>=99]\n")
    prepared = prepare_env(tmp_path, EnvRef("conda", f), "local")
    assert prepared.manager == "local" and prepared.python == Path(sys.executable)
    assert "no checks" in prepared.message and prepared.hash is not None
    f.write_text("dependencies: ['numpy=>1']\n")  # broken: local still runs, without a hash
    assert prepare_env(tmp_path, EnvRef("conda", f), "local").hash is None


def test_python_env_cannot_use_conda_and_docker_is_refused(tmp_path, kit):
    f = kit.write(tmp_path / "python_env.yaml", "dependencies: []\n")
    with pytest.raises(EnvSpecError, match="cannot be built with conda"):
        prepare_env(tmp_path, EnvRef("python", f), "conda")
    with pytest.raises(EnvSpecError, match="docker_env"):
        prepare_env(tmp_path, EnvRef("docker", image="img:1"))
    assert prepare_env(tmp_path, EnvRef("docker", image="img:1"), "local").manager == "local"


def test_no_env_file_runs_in_place(tmp_path):
    prepared = prepare_env(tmp_path, None)
    assert prepared.manager == "local" and prepared.hash is None
