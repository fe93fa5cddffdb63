"""`check_current` names an unmet build dependency (it used to name the last pip line, or crash
with UnboundLocalError when the file had no pip lines)."""

from __future__ import annotations

from mlkit.env.check import check_current
from mlkit.env.spec import EnvSpec, PipLine


def test_an_unmet_build_dependency_is_named(tmp_path):
    spec = EnvSpec(kind="python", source=tmp_path / "python_env.yaml", build_dependencies=("pip>=999",))
    result = check_current(spec)
    assert not result.satisfied
    assert result.reason == "python_env.yaml: build dependency 'pip>=999' is not met"


def test_the_build_dependency_not_the_last_pip_line(tmp_path):
    spec = EnvSpec(
        kind="python",
        source=tmp_path / "python_env.yaml",
        pip=(PipLine("pytest", "pytest"),),
        build_dependencies=("setuptools>=9999",),
    )
    result = check_current(spec)
    assert not result.satisfied
    assert "'setuptools>=9999'" in result.reason and "pytest" not in result.reason
