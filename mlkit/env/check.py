"""Does the running interpreter's environment already satisfy a spec? (the `auto` manager's check)

Distributions are found by listing `*.dist-info` / `*.egg-info` directories on `sys.path` (names
and versions come from the directory names; METADATA is read only for the few that need it), so
the check costs a few milliseconds, not the ~0.3 s of `importlib.metadata.distributions()`.
Conda names map to PyPI names (`pytorch` -> `torch`, `pyyaml` -> `PyYAML`, ...); conda version specs
are matched with conda's own semantics (rattler's VersionSpec: `torch=2.3` is a prefix match).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from mlkit.env import memo
from mlkit.env.installed import canon as _canon
from mlkit.env.installed import installed_distributions
from mlkit.env.spec import BUILD_TOOLS, EnvSpec, python_matches

# conda package name -> PyPI distribution name (canonicalised), where they differ
CONDA_TO_PYPI = {
    "pytorch": "torch",
    "pytorch-cpu": "torch",
    "pytorch-gpu": "torch",
    "py-opencv": "opencv-python",
    "opencv": "opencv-python",
    "tensorflow-gpu": "tensorflow",
    "matplotlib-base": "matplotlib",
    "py-xgboost": "xgboost",
    "libxgboost": "xgboost",
    "pytables": "tables",
    "msgpack-python": "msgpack",
    "ruamel.yaml": "ruamel-yaml",
    "libprotobuf": "protobuf",
}


@dataclass(frozen=True)
class CheckResult:
    satisfied: bool
    checked: int  # how many requirements were checked
    reason: str  # the first unmet requirement, or "" when satisfied


def _version_of(value: str | Path) -> str | None:
    if isinstance(value, str):
        return value
    from importlib.metadata import PathDistribution  # the import budget: ~20 ms, only for paths

    try:
        return PathDistribution(value).version
    except Exception:
        return None


def check_current(spec: EnvSpec) -> CheckResult:
    """Check python, the conda deps (mapped to PyPI names) and the pip requirements. The answer is
    remembered (mlkit.env.memo) for this spec, interpreter and set of installed distributions."""
    dists = installed_distributions()
    memo_key = memo.key(
        "check", spec.spec_hash, spec.kind, spec.file_label, sys.executable, sys.version, sys.platform,
        sys.implementation.name, list(os.uname()), sorted((name, str(where)) for name, where in dists.items()),
        [_mtime(where) for where in dists.values() if isinstance(where, Path)],
    )  # fmt: skip
    known = memo.get("check", memo_key)
    if isinstance(known, list) and len(known) == 3:
        return CheckResult(bool(known[0]), int(known[1]), str(known[2]))
    result = _check(spec, dists)
    memo.put("check", memo_key, [result.satisfied, result.checked, result.reason])
    return result


def _mtime(path: Path) -> int | None:
    """A metadata directory's time: its version is inside it (a reinstall makes the directory anew)."""
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def _check(spec: EnvSpec, dists: dict[str, str | Path]) -> CheckResult:
    label = spec.file_label
    current = ".".join(map(str, sys.version_info[:3]))
    checked = 0
    if spec.python is not None:
        checked += 1
        if not python_matches(spec.python, current):
            return CheckResult(False, checked, f"{label} asks for python {spec.python}, this is {current}")
    for step in (_check_conda_deps, _check_pip, _check_build_dependencies):
        result = step(spec, dists, checked)
        if not result.satisfied:
            return result
        checked = result.checked
    return CheckResult(True, checked, "")


# Each step below starts counting from `checked` and returns the count so far (satisfied) or the
# first unmet requirement.


def _check_conda_deps(spec: EnvSpec, dists: dict[str, str | Path], checked: int) -> CheckResult:
    """The conda dependencies, mapped to PyPI names, matched with conda's version semantics."""
    label = spec.file_label
    for dep in spec.conda_deps:
        import rattler  # the import budget: loaded once an env file is checked, then a dict lookup

        ms = rattler.MatchSpec(dep)
        name = ms.name.normalized
        if name in ("python", *BUILD_TOOLS):
            continue  # python is checked above; pip/setuptools/wheel are build tools
        checked += 1
        pypi = _canon(CONDA_TO_PYPI.get(name, name))
        if pypi not in dists:
            return CheckResult(False, checked, f"{label}: {dep!r} is not installed here")
        if ms.version is None:
            continue
        version = _version_of(dists[pypi])
        ok = False
        if version is not None:
            try:
                ok = rattler.VersionSpec(ms.version).matches(rattler.Version(_conda_version(version)))
            except Exception:
                ok = False
        if not ok:
            return CheckResult(False, checked, f"{label}: {dep!r} is not met (installed: {name} {version})")
    return CheckResult(True, checked, "")


def _check_pip(spec: EnvSpec, dists: dict[str, str | Path], checked: int) -> CheckResult:
    """The pip requirements (constraints count only when installed; markers are evaluated here)."""
    # the import budget: packaging loads only when an env file is checked
    from packaging.requirements import Requirement
    from packaging.version import InvalidVersion, Version

    label = spec.file_label
    for line in spec.pip:
        if line.name is None:
            if line.text.startswith("-") and not line.text.startswith(("-e", "--editable")):
                continue  # index options: they change where from, not what
            return CheckResult(False, checked + 1, f"{label}: {line.text!r} cannot be checked in place")
        req = Requirement(line.text)
        if req.marker is not None and not req.marker.evaluate():
            continue
        checked += 0 if line.constraint else 1
        key = _canon(req.name)
        if key not in dists:
            if line.constraint:
                continue
            return CheckResult(False, checked, f"{label}: {line.text!r} is not installed here")
        if req.url:
            return CheckResult(False, checked, f"{label}: {line.text!r} cannot be checked in place")
        version = _version_of(dists[key])
        try:
            ok = version is not None and req.specifier.contains(Version(version), prereleases=True)
        except InvalidVersion:
            ok = False
        if not ok:
            return CheckResult(False, checked, f"{label}: {line.text!r} is not met (installed: {version})")
    return CheckResult(True, checked, "")


def _check_build_dependencies(spec: EnvSpec, dists: dict[str, str | Path], checked: int) -> CheckResult:
    """python_env.yaml's build dependencies."""
    # the import budget: packaging loads only when an env file is checked
    from packaging.requirements import Requirement
    from packaging.version import Version

    for build_dep in spec.build_dependencies:
        req = Requirement(build_dep)
        checked += 1
        key = _canon(req.name)
        version = _version_of(dists[key]) if key in dists else None
        if version is None or not req.specifier.contains(Version(version), prereleases=True):
            return CheckResult(
                False, checked, f"{spec.file_label}: build dependency {build_dep!r} is not met"
            )
    return CheckResult(True, checked, "")


def _conda_version(pypi_version: str) -> str:
    """A PyPI version as conda compares it: drop a local label (torch 2.3.1+cu121 -> 2.3.1)."""
    return pypi_version.split("+", 1)[0]
