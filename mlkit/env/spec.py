"""What an environment file asks for: `EnvSpec`, read from conda.yaml or python_env.yaml, validated.

The content hash changes exactly when what would be installed changes: channel order counts,
dependency order, whitespace and comments do not; `-r requirements.txt` files are read into it;
a `conda-lock.yml` next to the conda.yaml replaces the spec in the hash by the lockfile's content.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from mlkit import __version__
from mlkit.digest import sha256_hex
from mlkit.env import memo
from mlkit.env.installed import installed_distributions
from mlkit.env.lockfile import CONTROL_CHARS, LOCKFILE_NAME, lockfile_hashes
from mlkit.env.ref import HASH_LEN, EnvRef
from mlkit.errors import EnvSpecError
from mlkit.yamlsafe import decode_text, load_yaml, read_bounded

BUILD_TOOLS = ("pip", "setuptools", "wheel")
_PIP_FILE_OPTIONS = ("-r", "--requirement", "-c", "--constraint")


@dataclass(frozen=True)
class PipLine:
    """One pip requirement line: a requirement, a `-r/-c file` (already expanded) or an option."""

    text: str  # as it goes into the requirements file uv reads
    name: str | None = None  # normalised distribution name when it is a PEP 508 requirement
    constraint: bool = False  # came from a `-c` file


@dataclass(frozen=True)
class EnvSpec:
    """A validated environment file."""

    kind: str  # "conda" | "python"
    source: Path  # the conda.yaml / python_env.yaml
    name: str | None = None
    channels: tuple[str, ...] = ()
    conda_deps: tuple[str, ...] = ()  # MatchSpec strings, as written (validated)
    pip: tuple[PipLine, ...] = ()  # pip requirements (python_env: `dependencies`)
    build_dependencies: tuple[str, ...] = ()  # python_env.yaml only
    python: str | None = None  # a conda version spec ("3.11.*", ">=3.10", "3.11.7"); None: unpinned
    variables: dict[str, str] = field(default_factory=dict)  # conda.yaml `variables:`
    lockfile: Path | None = None
    lockfile_hash: str | None = None
    lockfile_spec_hash: str | None = None  # the spec hash the lockfile was made from (mlkit's lockfiles)
    spec_hash: str = ""  # hash of the spec alone (ignores the lockfile)
    hash: str = ""  # the cache key: the lockfile's hash when there is one, else spec_hash

    @property
    def pip_only(self) -> bool:
        """True when no conda package but python and the pip build tools is asked for."""
        return all(dep_name(d) in ("python", *BUILD_TOOLS) for d in self.conda_deps)

    @property
    def non_pip_conda_deps(self) -> list[str]:
        return [d for d in self.conda_deps if dep_name(d) not in ("python", *BUILD_TOOLS)]

    def package_count(self) -> int:
        names = {dep_name(d) for d in self.conda_deps} - {"pip"}
        names |= {p.name for p in self.pip if p.name and not p.constraint}
        return len(names)

    @property
    def file_label(self) -> str:
        return self.source.name


def dep_name(dep: str) -> str:
    """Name of a conda dependency string (already validated), lower-case, channel stripped."""
    text = dep.split("::", 1)[-1].strip()
    match = re.match(r"[A-Za-z0-9_.\-]+", text)
    return (match.group(0) if match else text).lower()


def load_spec(project_dir: Path, env_ref: EnvRef | None) -> EnvSpec | None:
    """Read and validate the environment file an `EnvRef` names; None when there is none."""
    if env_ref is None or env_ref.kind == "docker":
        return None
    if env_ref.path is None:
        raise EnvSpecError(f"{env_ref.kind} environment without a file", hint="name the file in MLproject")
    path = Path(env_ref.path)
    if not path.is_absolute():
        path = Path(project_dir) / path
    try:
        found = path.is_file()
    except (OSError, ValueError):
        found = False
    if not found:
        raise EnvSpecError(
            f"{path.name[:80]}: file not found ({str(path)[:200]})",
            hint="create it or fix the conda_env / python_env entry in MLproject",
        )
    memo_key = _memo_key(path, env_ref.kind)
    spec = _from_memo(memo_key, path)
    if spec is not None:
        return spec
    data = _read_yaml(path)
    reads: list[Path] = []  # the -r/-c files the spec was built from
    if env_ref.kind == "python":
        spec = _python_env(path, data, Path(project_dir), reads)
    else:
        spec = _conda_env(path, data, Path(project_dir), reads)
    spec = _with_hashes(spec)
    _to_memo(memo_key, spec, reads)
    return spec


def _memo_key(path: Path, kind: str) -> str | None:
    """What the spec read from `path` depends on, besides the -r/-c files it names (mlkit.env.memo);
    None when the file cannot be read (load_spec then says why)."""
    content = memo.digest_file(path)
    if content is None:
        return None
    lockfile = path.parent / LOCKFILE_NAME
    dists = installed_distributions()
    return memo.key(
        "spec", kind, str(path.absolute()), content, memo.digest_file(lockfile) if kind == "conda" else None,
        sys.version_info[:2], __version__, str(dists.get("py-rattler")), str(dists.get("packaging")),
    )  # fmt: skip


def _from_memo(memo_key: str | None, path: Path) -> EnvSpec | None:
    """The spec the memo holds for `memo_key`, if every -r/-c file it was built from is unchanged."""
    entry = memo.get("spec", memo_key) if memo_key else None
    try:
        if not entry or any(memo.digest_file(file) != digest for file, digest in entry["reads"]):
            return None
        doc = entry["spec"]
        return EnvSpec(
            kind=doc["kind"], source=path, name=doc["name"], channels=tuple(doc["channels"]),
            conda_deps=tuple(doc["conda_deps"]), pip=tuple(PipLine(t, n, bool(c)) for t, n, c in doc["pip"]),
            build_dependencies=tuple(doc["build_dependencies"]), python=doc["python"],
            variables=dict(doc["variables"]), lockfile=Path(doc["lockfile"]) if doc["lockfile"] else None,
            lockfile_hash=doc["lockfile_hash"], lockfile_spec_hash=doc["lockfile_spec_hash"],
            spec_hash=doc["spec_hash"], hash=doc["hash"],
        )  # fmt: skip
    except (KeyError, TypeError, ValueError):
        return None  # an entry of another shape: read the file


def _to_memo(memo_key: str | None, spec: EnvSpec, reads: list[Path]) -> None:
    if memo_key is None:
        return
    files = [[str(file), memo.digest_file(file)] for file in dict.fromkeys(reads)]
    if any(digest is None for _file, digest in files):
        return
    doc = {
        "kind": spec.kind, "name": spec.name, "channels": list(spec.channels), "conda_deps": list(spec.conda_deps),
        "pip": [[p.text, p.name, p.constraint] for p in spec.pip], "build_dependencies": list(spec.build_dependencies),
        "python": spec.python, "variables": spec.variables, "lockfile": str(spec.lockfile) if spec.lockfile else None,
        "lockfile_hash": spec.lockfile_hash, "lockfile_spec_hash": spec.lockfile_spec_hash,
        "spec_hash": spec.spec_hash, "hash": spec.hash,
    }  # fmt: skip
    memo.put("spec", memo_key, {"reads": files, "spec": doc})


def _read_yaml(path: Path) -> object:
    return load_yaml(path, path.name, EnvSpecError)


# ----------------------------------------------------------------------------------- python_env


def _python_env(path: Path, data: object, project_dir: Path, reads: list[Path]) -> EnvSpec:
    label = path.name
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise EnvSpecError(f"{label}: must be a mapping with python, build_dependencies, dependencies")
    unknown = sorted(set(data) - {"python", "build_dependencies", "dependencies"})
    if unknown:
        raise EnvSpecError(
            f"{label}: unknown key {unknown[0]!r}",
            hint="python_env.yaml has exactly three keys: python, build_dependencies, dependencies",
        )
    python = data.get("python")
    if python is not None:
        if isinstance(python, (int, float)):
            raise EnvSpecError(
                f"{label}: python: must be a string, got {python!r}", hint=f'quote it: python: "{python}"'
            )
        if not isinstance(python, str) or not re.fullmatch(r"\d+(\.\d+){0,2}", python.strip()):
            raise EnvSpecError(f"{label}: python: {python!r} is not a version like 3.11 or 3.11.7")
        python = python.strip()
        python = f"{python}.*" if python.count(".") < 2 else python
    build = _str_list(data.get("build_dependencies"), f"{label}: build_dependencies")
    for i, item in enumerate(build):
        _parse_requirement(item, f"{label}: build_dependencies[{i}]")
    deps = _str_list(data.get("dependencies"), f"{label}: dependencies")
    pip = _pip_lines(deps, f"{label}: dependencies", project_dir, reads=reads)
    return EnvSpec(kind="python", source=path, python=python, build_dependencies=tuple(build), pip=pip)


def _str_list(value: object, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise EnvSpecError(f"{where}: must be a list, got {type(value).__name__}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise EnvSpecError(f"{where}[{i}]: must be a string, got {item!r}")
    return [item.strip() for item in value]


# ----------------------------------------------------------------------------------- conda.yaml


def _conda_env(path: Path, data: object, project_dir: Path, reads: list[Path]) -> EnvSpec:
    label = path.name
    if not isinstance(data, dict):
        raise EnvSpecError(f"{label}: must be a mapping with name, channels and dependencies")
    name = data.get("name")
    if name is not None and not isinstance(name, str):
        name = str(name)
    channels = _str_list(data.get("channels"), f"{label}: channels")
    for i, channel in enumerate(channels):
        if not channel:
            raise EnvSpecError(f"{label}: channels[{i}]: empty channel name")
    variables = data.get("variables") or {}
    if not isinstance(variables, dict):
        raise EnvSpecError(f"{label}: variables: must be a mapping of names to values")
    for var in variables:
        if not var or "=" in var:  # the run's environment could not hold it
            raise EnvSpecError(
                f"{label}: variables: {var[:200]!r} is not a variable name",
                hint="a name is not empty and holds no '=', e.g. CUDA_LAUNCH_BLOCKING",
            )
    deps = data.get("dependencies")
    if deps is None:
        deps = []
    if not isinstance(deps, list):
        raise EnvSpecError(f"{label}: dependencies: must be a list, got {type(deps).__name__}")
    conda: list[str] = []
    pip: tuple[PipLine, ...] = ()
    python: str | None = None
    for i, dep in enumerate(deps):
        where = f"{label}: dependencies[{i}]"
        if isinstance(dep, (int, float)):
            dep = str(dep)
        if isinstance(dep, str):
            text = dep.strip()
            spec = _match_spec(text, where)
            conda.append(text)
            if spec[0] == "python" and python is None:
                python = spec[1]
        elif isinstance(dep, dict) and list(dep) == ["pip"]:
            items = _str_list(dep["pip"], f"{where}.pip")
            pip = _pip_lines(items, f"{where}.pip", project_dir, reads=reads)  # as MLflow: the last one wins
        else:
            raise EnvSpecError(
                f"{where}: invalid conda dependency {dep!r}",
                hint="use a string like 'numpy>=1.24' or a mapping {pip: [...]}",
            )
    return EnvSpec(
        kind="conda",
        source=path,
        name=name,
        channels=tuple(channels),
        conda_deps=tuple(conda),
        pip=pip,
        python=python,
        variables={str(k): "" if v is None else str(v) for k, v in variables.items()},
    )


def _match_spec(text: str, where: str) -> tuple[str, str | None]:
    """Validate a conda MatchSpec with rattler; (normalised name, version spec or None)."""
    import rattler  # the import budget: rattler is heavy; only conda specs load it

    try:
        spec = rattler.MatchSpec(text)
    except Exception as exc:  # rattler raises its own InvalidMatchSpecError
        detail = (str(exc).splitlines() or [type(exc).__name__])[0]
        what = "a valid version spec" if "version" in detail else "a valid conda package spec"
        raise EnvSpecError(
            f"{where}: {text!r} is not {what} ({detail})",
            hint="conda specs look like 'numpy', 'numpy>=1.24', 'numpy=1.24' or 'numpy 1.24.*'",
        ) from None
    name = spec.name.normalized if spec.name is not None else ""
    if not name or "*" in name:
        raise EnvSpecError(f"{where}: {text!r} names no package")
    return name, spec.version


def normalized_match_spec(text: str) -> str:
    import rattler  # the import budget: rattler is heavy; only conda specs load it

    return str(rattler.MatchSpec(text))


# ----------------------------------------------------------------------------------- pip lines


def _parse_requirement(text: str, where: str):
    # the import budget: only pip sections need packaging
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        return Requirement(text)
    except InvalidRequirement as exc:
        raise EnvSpecError(
            f"{where}: {text!r} is not a valid requirement ({str(exc).splitlines()[0]})",
            hint="pip requirements look like 'numpy', 'numpy>=1.24' or 'numpy==1.24.*'",
        ) from None


def _looks_like_path_or_url(text: str) -> bool:
    return "://" in text or text.startswith((".", "/", "~")) or text.endswith((".whl", ".tar.gz", ".zip"))


def _pip_lines(
    items: list[str],
    where: str,
    base: Path,
    seen: frozenset[Path] = frozenset(),
    *,
    reads: list[Path] | None = None,
) -> tuple:
    from packaging.utils import canonicalize_name  # the import budget: only pip sections need packaging

    lines: list[PipLine] = []
    for i, raw in enumerate(items):
        item = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not item:
            continue
        here = f"{where}[{i}]"
        option = next((o for o in _PIP_FILE_OPTIONS if item == o or item.startswith(o + " ")), None)
        if option is None:
            option = next((o for o in ("-r", "-c") if item.startswith(o) and len(item) > 2), None)
        if option is not None:
            target = item[len(option) :].strip().lstrip("=").strip()
            content, file = _read_requirements(base, target, f"{here}: {item[:200]!r}")
            if reads is not None:
                reads.append(file)
            if file in seen:
                continue
            sub = _join_continuations(content)
            nested = _pip_lines(sub, f"{file.name}: line", file.parent, seen | {file}, reads=reads)
            constraint = option in ("-c", "--constraint")
            lines.extend(PipLine(p.text, p.name, p.constraint or constraint) for p in nested)
        elif CONTROL_CHARS.search(item):  # uv would read a second line (an option, a -r never checked here)
            raise EnvSpecError(
                f"{here}: {item[:200]!r} holds a line break or another control character",
                hint="give each requirement or option its own list entry",
            )
        elif item.startswith("-"):
            lines.append(PipLine(item))  # --extra-index-url, --find-links, -e path, --pre ...
        elif _looks_like_path_or_url(item):
            lines.append(PipLine(item))
        else:
            req = _parse_requirement(item, here)
            lines.append(PipLine(str(req), canonicalize_name(req.name)))
    return tuple(lines)


MAX_REQUIREMENTS_BYTES = 1 << 20


def _read_requirements(base: Path, target: str, where: str) -> tuple[str, Path]:
    """The text of a `-r`/`-c` file: a regular UTF-8 file of at most 1 MiB, else one line."""
    if "\x00" in target or len(target) > 1024:
        what = "contains a NUL byte" if "\x00" in target else f"is {len(target)} characters long"
        raise EnvSpecError(f"{where}: the file name {what}", hint="name a requirements file in the project")
    try:
        file = (base / target).resolve()
        exists = file.exists()
    except (OSError, ValueError):
        exists = False
        file = base / target
    if not exists:
        raise EnvSpecError(
            f"{where}: file not found ({str(file)[:200]})",
            hint="paths in -r/-c lines are relative to the project directory",
        )
    data = read_bounded(file, where, EnvSpecError, MAX_REQUIREMENTS_BYTES)
    return decode_text(data, where, EnvSpecError), file


def _join_continuations(content: str) -> list[str]:
    out: list[str] = []
    buf = ""
    for line in content.splitlines():
        if line.endswith("\\"):
            buf += line[:-1]
            continue
        out.append(buf + line)
        buf = ""
    if buf:
        out.append(buf)
    return out


# ----------------------------------------------------------------------------------- hashing


def _digest(obj: object) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return sha256_hex(text.encode())[:HASH_LEN]


def spec_canonical(spec: EnvSpec) -> dict:
    """What the hash covers: everything that changes what gets installed, normalised."""
    python = spec.python
    if python is None and (spec.kind == "python" or spec.pip):
        python = "current:" + ".".join(
            map(str, sys.version_info[:2])
        )  # unpinned: the running interpreter's X.Y
    return {
        "v": 1,
        "kind": spec.kind,
        "channels": list(spec.channels),  # order matters: channel priority
        "conda": sorted(normalized_match_spec(d) for d in spec.conda_deps),
        "pip": sorted({f"{'c' if p.constraint else 'r'}:{p.text}" for p in spec.pip}),
        "build": sorted(spec.build_dependencies),
        "python": python,
    }


def _with_hashes(spec: EnvSpec) -> EnvSpec:
    spec_hash = _digest(spec_canonical(spec))
    lockfile = spec.source.parent / LOCKFILE_NAME if spec.kind == "conda" else None
    lock_hash = locked_from = None
    if lockfile is not None and lockfile.is_file():
        lock_hash, locked_from = lockfile_hashes(lockfile)
    else:
        lockfile = None
    env_key = _digest({"v": 1, "lock": lock_hash}) if lock_hash else spec_hash
    return replace(
        spec, spec_hash=spec_hash, lockfile=lockfile, lockfile_hash=lock_hash, lockfile_spec_hash=locked_from,
        hash=env_key,
    )  # fmt: skip


def python_request(spec_python: str | None) -> str | None:
    """A conda version spec for python as something `uv venv --python` understands."""
    if spec_python is None:
        return None
    text = spec_python.strip()
    if re.fullmatch(r"=?=?\d+(\.\d+)*", text):
        return text.lstrip("=")
    m = re.fullmatch(r"=?=?(\d+(\.\d+)*)\.\*", text)
    if m:
        return m.group(1)
    from packaging.specifiers import InvalidSpecifier, SpecifierSet  # the import budget: rare path

    try:
        return str(SpecifierSet(text))
    except InvalidSpecifier:
        return None


def python_matches(spec_python: str | None, version: str) -> bool:
    """Does an interpreter version (e.g. '3.11.7') satisfy the spec's python (conda semantics)?"""
    if spec_python is None:
        return True
    import rattler  # the import budget: rattler is heavy; only conda specs load it

    try:
        return rattler.VersionSpec(spec_python).matches(rattler.Version(version))
    except Exception:
        return False
