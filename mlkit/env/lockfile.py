"""`conda-lock.yml` (conda-lock's version 1 format): the file, read and written. No solving here.

The file is what `conda-lock install` reads; mlkit's `conda` manager installs exactly the locked
records of the current platform (`locked_records`, no solve), and `uv` installs the locked pip
entries with `--no-deps`. `mlkit.env.solve` makes the entries and calls `write_lockfile`.

mlkit keeps two things in `metadata.custom_metadata`: `mlkit.spec_hash` (the conda.yaml it was
made from; a changed conda.yaml makes the lockfile stale and mlkit says so) and
`mlkit.virtual_packages.<platform>` (what the solve assumed, e.g. whether `__cuda` was there).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mlkit import fsio
from mlkit.digest import sha256_hex
from mlkit.env.ref import HASH_LEN
from mlkit.errors import EnvBuildError, EnvSpecError
from mlkit.yamlsafe import load_yaml

LOCKFILE_NAME = "conda-lock.yml"  # read next to the conda.yaml; replaces it in the env hash
# what may not be in a requirement line uv reads (all control characters but tab): a line break
# would make one entry two, the second never checked
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")


def current_platform() -> str:
    """This machine's conda platform (`linux-64`, `osx-arm64`, ...): the key of its locked packages."""
    import rattler  # the import budget: rattler is heavy and only env builds and locks need it

    return str(rattler.Subdir.current())


@dataclass(frozen=True)
class LockedPackage:
    name: str
    version: str
    manager: str  # conda | pip
    platform: str
    url: str
    md5: str | None = None
    sha256: str | None = None
    build: str | None = None
    dependencies: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Lockfile:
    """A `conda-lock.yml` as read: its platforms, channels and packages."""

    path: Path
    platforms: list[str]
    channels: list[str]
    packages: list[LockedPackage]
    virtual_packages: dict[str, str]  # platform -> "__glibc=2.36,__cuda=12.4,..."
    spec_hash: str | None  # the conda.yaml hash it was made from (mlkit-made lockfiles)
    content_hash: str

    def for_platform(self, platform: str, manager: str = "conda") -> list[LockedPackage]:
        return [p for p in self.packages if p.platform == platform and p.manager == manager]

    def explicit(self, platform: str) -> str:
        """An `@EXPLICIT` file for conda/mamba/micromamba create --file (conda packages only)."""
        lines = ["@EXPLICIT"]
        for p in self.for_platform(platform):
            lines.append(f"{p.url}#{p.md5}" if p.md5 else p.url)
        return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ reading


# a lockfile is bigger by nature than a conda.yaml (every package of every platform, with its
# dependencies): the bounded reader with limits far above any real one, but not an alias bomb's
MAX_LOCK_BYTES = 16 << 20
MAX_LOCK_NODES = 2_000_000


def _load_yaml(path: Path) -> object:
    return load_yaml(
        path, path.name, EnvSpecError, max_bytes=MAX_LOCK_BYTES, max_nodes=MAX_LOCK_NODES, string_keys=False
    )


_REGENERATE = "regenerate it with `mlkit env lock` or `conda-lock --kind lock`"


def read_lockfile(path: Path) -> Lockfile:
    label = path.name
    data = _load_yaml(path)
    if not isinstance(data, dict):
        raise EnvSpecError(f"{label}: not a conda-lock file (expected a mapping)")
    version = data.get("version")
    if version != 1:
        raise EnvSpecError(
            f"{label}: version: {version!r} is not supported (mlkit reads conda-lock's version 1 format)",
            hint=_REGENERATE,
        )
    meta = data.get("metadata")
    if not isinstance(meta, dict):
        raise EnvSpecError(f"{label}: metadata: missing")
    platforms = meta.get("platforms")
    if not isinstance(platforms, list) or not platforms:
        raise EnvSpecError(f"{label}: metadata.platforms: missing or empty")
    raw_channels = meta.get("channels") or []
    if not isinstance(raw_channels, list):
        raise EnvSpecError(f"{label}: metadata.channels: must be a list", hint=_REGENERATE)
    channels = [c.get("url") if isinstance(c, dict) else str(c) for c in raw_channels]
    custom = meta.get("custom_metadata") or {}
    if not isinstance(custom, dict):
        raise EnvSpecError(f"{label}: metadata.custom_metadata: must be a mapping", hint=_REGENERATE)
    vps = {k.split(".", 2)[2]: v for k, v in custom.items() if str(k).startswith("mlkit.virtual_packages.")}
    raw = data.get("package")
    if not isinstance(raw, list):
        raise EnvSpecError(f"{label}: package: must be a list")
    packages = [_locked_package(item, f"{label}: package[{i}]") for i, item in enumerate(raw)]
    return Lockfile(
        path=path,
        platforms=[str(p) for p in platforms],
        channels=[c for c in channels if c],
        packages=packages,
        virtual_packages=vps,
        spec_hash=custom.get("mlkit.spec_hash"),
        content_hash=_packages_hash(packages),
    )


def require_platform(lock: Lockfile, platform: str, project_dir: Path) -> None:
    """Refuse a lockfile made for other platforms only: installing its (no) entries for this one
    would build an environment without any of the packages."""
    if platform not in lock.platforms:
        raise EnvSpecError(
            f"{lock.path.name}: has no packages for this platform ({platform}); it has {', '.join(lock.platforms)}",
            hint=f"mlkit env lock {project_dir} -p {platform}",
        )


def _locked_package(item: object, where: str) -> LockedPackage:
    if not isinstance(item, dict):
        raise EnvSpecError(f"{where}: must be a mapping")
    for key in ("name", "version", "manager", "platform", "url"):
        if not isinstance(item.get(key), str) or not item.get(key):
            raise EnvSpecError(f"{where}: {key}: missing")
    if item["manager"] not in ("conda", "pip"):
        raise EnvSpecError(f"{where}: manager: {item['manager']!r} is not conda or pip")
    hashes = item.get("hash") or {}
    if not isinstance(hashes, dict):
        raise EnvSpecError(f"{where}: hash: must be a mapping")
    for key in ("md5", "sha256"):
        if hashes.get(key) is not None and not isinstance(hashes[key], str):
            raise EnvSpecError(f"{where}: hash.{key}: must be a string")
    if item["manager"] == "conda" and not hashes.get("md5"):
        raise EnvSpecError(f"{where}: hash.md5: missing (conda packages need one)")
    deps = item.get("dependencies") or {}
    if not isinstance(deps, dict):
        raise EnvSpecError(f"{where}: dependencies: must be a mapping")
    for key, value in (*item.items(), *(("hash." + k, v) for k, v in hashes.items())):
        if isinstance(value, str) and CONTROL_CHARS.search(value):
            raise EnvSpecError(
                f"{where}: {key}: {value[:200]!r} holds a line break or another control character"
            )
    return LockedPackage(
        name=item["name"],
        version=str(item["version"]),
        manager=item["manager"],
        platform=item["platform"],
        url=item["url"],
        md5=hashes.get("md5"),
        sha256=hashes.get("sha256"),
        build=item.get("build"),
        dependencies={str(k): str(v) for k, v in deps.items()},
    )


def _packages_hash(packages: list[LockedPackage]) -> str:
    rows = sorted(
        (p.manager, p.platform, p.name, p.version, p.build or "", p.url, p.md5 or "", p.sha256 or "")
        for p in packages
    )
    return sha256_hex(json.dumps(rows).encode())[:HASH_LEN]


def lockfile_hashes(path: Path) -> tuple[str, str | None]:
    """(the hash of what the lockfile installs — its packages' URLs and hashes, not its text —,
    the spec hash it was made from, None when another tool made it), from one read."""
    lock = read_lockfile(path)
    return lock.content_hash, lock.spec_hash


def _build_number(build: str | None) -> int:
    m = re.search(r"(\d+)$", build or "")
    return int(m.group(1)) if m else 0


def locked_records(lock: Lockfile, platform: str) -> list:
    """RepoDataRecords for rattler.install, made from the lockfile alone (no repodata, no solve)."""
    from rattler import BuildString, PackageRecord, RepoDataRecord  # the import budget (rattler)

    records = []
    for p in lock.for_platform(platform):
        file_name = p.url.rsplit("/", 1)[-1]
        subdir = p.url.rsplit("/", 2)[-2] if p.url.count("/") >= 2 else platform
        channel = p.url.rsplit("/", 2)[0] + "/"
        depends = [f"{k} {v}".strip() for k, v in p.dependencies.items()]
        noarch: Literal["python", "generic"] | None = None
        if subdir == "noarch":
            noarch = "python" if "python" in p.dependencies else "generic"
        build = p.build or _build_from_filename(file_name, p.name, p.version)
        record = PackageRecord(
            p.name,
            p.version,
            BuildString(build),
            _build_number(build),
            subdir,
            noarch=noarch,
            depends=depends,
            md5=bytes.fromhex(p.md5) if p.md5 else None,
            sha256=bytes.fromhex(p.sha256) if p.sha256 else None,
        )
        records.append(RepoDataRecord(record, file_name, p.url, channel))
    return records


def _build_from_filename(file_name: str, name: str, version: str) -> str:
    stem = re.sub(r"(\.tar\.bz2|\.conda)$", "", file_name)
    prefix = f"{name}-{version}-"
    return stem[len(prefix) :] if stem.startswith(prefix) else "0"


# ------------------------------------------------------------------------------------ writing


def _hex(value: object) -> str | None:
    if value is None:
        return None
    return value.hex() if isinstance(value, (bytes, bytearray)) else str(value)


def conda_entry(record: Any, platform: str) -> dict:
    """The `package:` entry of a solved conda record (a rattler RepoDataRecord)."""
    deps: dict[str, str] = {}
    for dep in record.depends:
        name, _, rest = dep.strip().partition(" ")
        deps[name] = rest.strip()
    entry = {
        "name": record.name.normalized,
        "version": str(record.version),
        "manager": "conda",
        "platform": platform,
        "dependencies": deps,
        "url": record.url,
        "hash": {k: v for k, v in (("md5", _hex(record.md5)), ("sha256", _hex(record.sha256))) if v},
        "category": "main",
        "optional": False,
    }
    if record.build:
        entry["build"] = str(record.build)
    return entry


def pip_entry(name: str, version: str, platform: str, url: str, sha256: str | None) -> dict:
    """The `package:` entry of a pip distribution, locked to one file (wheel or sdist)."""
    return {
        "name": name,
        "version": version,
        "manager": "pip",
        "platform": platform,
        "dependencies": {},
        "url": url,
        "hash": {"sha256": sha256} if sha256 else {},
        "category": "main",
        "optional": False,
    }


def write_lockfile(
    path: Path,
    *,
    platforms: list[str],
    channels: list[str],
    sources: list[str],
    spec_hash: str,
    virtual_packages: dict[str, str],
    content_hash: dict[str, str],
    entries: list[dict],
) -> None:
    """Write `path` atomically: entries sorted by platform, manager and name, mlkit's metadata kept."""
    import yaml  # the import budget: yaml loads only when a lockfile is written

    doc = {
        "version": 1,
        "metadata": {
            "content_hash": content_hash,
            "channels": [{"url": c, "used_env_vars": []} for c in channels],
            "platforms": platforms,
            "sources": sources,
            "custom_metadata": {
                "mlkit.spec_hash": spec_hash,
                **{f"mlkit.virtual_packages.{p}": v for p, v in virtual_packages.items()},
            },
        },
        "package": sorted(entries, key=lambda e: (e["platform"], e["manager"], e["name"])),
    }
    header = (
        "# This lock file was generated by mlkit env lock in conda-lock's format. DO NOT EDIT!\n"
        f"# Install it with `mlkit env create PROJECT` or `conda-lock install -p PREFIX {LOCKFILE_NAME}`.\n"
    )
    text = header + yaml.safe_dump(doc, sort_keys=False, width=1000)
    fsio.atomic_write(path, text, error=EnvBuildError)
