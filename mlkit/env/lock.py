"""`conda-lock.yml` (conda-lock's version 1 format): write it from a rattler solve, read it back.

One solve per platform with rattler, with that platform's virtual packages (this machine's,
detected, for the current platform; conservative defaults for the others; `__cuda` only when
detected or asked for with `--cuda`). The pip part is resolved with `uv pip compile` for each
platform and recorded as `manager: pip` entries with the wheel URL and sha256. The file is what
`conda-lock install` reads; mlkit's `conda` manager installs exactly the locked records of the
current platform (no solve), and `uv` installs the locked pip entries with `--no-deps`.

mlkit keeps two things in `metadata.custom_metadata`: `mlkit.spec_hash` (the conda.yaml it was
made from; a changed conda.yaml makes the lockfile stale and mlkit says so) and
`mlkit.virtual_packages.<platform>` (what the solve assumed, e.g. whether `__cuda` was there).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from mlkit import fsio
from mlkit.env.ref import EnvRef
from mlkit.errors import EnvBuildError, EnvSpecError, UsageError

KNOWN_PLATFORMS = ("linux-64", "linux-aarch64", "linux-ppc64le", "osx-64", "osx-arm64", "win-64")
PY_PLATFORM = {
    "linux-64": "x86_64-unknown-linux-gnu",
    "linux-aarch64": "aarch64-unknown-linux-gnu",
    "linux-ppc64le": "powerpc64le-unknown-linux-gnu",
    "osx-64": "x86_64-apple-darwin",
    "osx-arm64": "aarch64-apple-darwin",
    "win-64": "x86_64-pc-windows-msvc",
}
# virtual packages assumed for platforms other than this machine's: old enough to be safe
DEFAULT_VIRTUAL = {
    "linux-64": [
        ("__unix", "0", "0"),
        ("__linux", "5.10", "0"),
        ("__glibc", "2.28", "0"),
        ("__archspec", "1", "x86_64"),
    ],
    "linux-aarch64": [
        ("__unix", "0", "0"),
        ("__linux", "5.10", "0"),
        ("__glibc", "2.28", "0"),
        ("__archspec", "1", "aarch64"),
    ],
    "linux-ppc64le": [
        ("__unix", "0", "0"),
        ("__linux", "5.10", "0"),
        ("__glibc", "2.28", "0"),
        ("__archspec", "1", "ppc64le"),
    ],
    "osx-64": [("__unix", "0", "0"), ("__osx", "10.15", "0"), ("__archspec", "1", "x86_64")],
    "osx-arm64": [("__unix", "0", "0"), ("__osx", "11.0", "0"), ("__archspec", "1", "arm64")],
    "win-64": [("__win", "0", "0"), ("__archspec", "1", "x86_64")],
}


def current_platform() -> str:
    import rattler

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
class Lock:
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


def _load_yaml(path: Path) -> object:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506 (safe loader)
    except yaml.YAMLError as exc:
        raise EnvSpecError(f"{path.name}: not valid YAML: {str(exc).splitlines()[0]}") from None
    except OSError as exc:
        raise EnvSpecError(f"{path.name}: cannot be read: {exc.strerror}") from None


def read_lockfile(path: Path) -> Lock:
    label = path.name
    data = _load_yaml(path)
    if not isinstance(data, dict):
        raise EnvSpecError(f"{label}: not a conda-lock file (expected a mapping)")
    version = data.get("version")
    if version != 1:
        raise EnvSpecError(
            f"{label}: version: {version!r} is not supported (mlkit reads conda-lock's version 1 format)",
            hint="regenerate it with `mlkit env lock` or `conda-lock --kind lock`",
        )
    meta = data.get("metadata")
    if not isinstance(meta, dict):
        raise EnvSpecError(f"{label}: metadata: missing")
    platforms = meta.get("platforms")
    if not isinstance(platforms, list) or not platforms:
        raise EnvSpecError(f"{label}: metadata.platforms: missing or empty")
    channels = [c.get("url") if isinstance(c, dict) else str(c) for c in meta.get("channels") or []]
    custom = meta.get("custom_metadata") or {}
    vps = {k.split(".", 2)[2]: v for k, v in custom.items() if k.startswith("mlkit.virtual_packages.")}
    raw = data.get("package")
    if not isinstance(raw, list):
        raise EnvSpecError(f"{label}: package: must be a list")
    packages = []
    for i, item in enumerate(raw):
        where = f"{label}: package[{i}]"
        if not isinstance(item, dict):
            raise EnvSpecError(f"{where}: must be a mapping")
        for key in ("name", "version", "manager", "platform", "url"):
            if not isinstance(item.get(key), str) or not item.get(key):
                raise EnvSpecError(f"{where}: {key}: missing")
        if item["manager"] not in ("conda", "pip"):
            raise EnvSpecError(f"{where}: manager: {item['manager']!r} is not conda or pip")
        hashes = item.get("hash") or {}
        if item["manager"] == "conda" and not hashes.get("md5"):
            raise EnvSpecError(f"{where}: hash.md5: missing (conda packages need one)")
        deps = item.get("dependencies") or {}
        packages.append(
            LockedPackage(
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
        )
    return Lock(
        path=path,
        platforms=[str(p) for p in platforms],
        channels=[c for c in channels if c],
        packages=packages,
        virtual_packages=vps,
        spec_hash=custom.get("mlkit.spec_hash"),
        content_hash=_packages_hash(packages),
    )


def _packages_hash(packages: list[LockedPackage]) -> str:
    from mlkit.env.spec import HASH_LEN

    rows = sorted(
        (p.manager, p.platform, p.name, p.version, p.build or "", p.url, p.md5 or "", p.sha256 or "")
        for p in packages
    )
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:HASH_LEN]


def lockfile_content_hash(path: Path) -> str:
    """The hash of what the lockfile installs (its packages: URLs and hashes), not of its text."""
    return read_lockfile(path).content_hash


def _build_number(build: str | None) -> int:
    m = re.search(r"(\d+)$", build or "")
    return int(m.group(1)) if m else 0


def locked_records(lock: Lock, platform: str) -> list:
    """RepoDataRecords for rattler.install, made from the lockfile alone (no repodata, no solve)."""
    from rattler import BuildString, PackageRecord, RepoDataRecord

    records = []
    for p in lock.for_platform(platform):
        file_name = p.url.rsplit("/", 1)[-1]
        subdir = p.url.rsplit("/", 2)[-2] if p.url.count("/") >= 2 else platform
        channel = p.url.rsplit("/", 2)[0] + "/"
        depends = [f"{k} {v}".strip() for k, v in p.dependencies.items()]
        noarch = None
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


def virtual_packages_for(platform: str, cuda: str | None) -> list:
    """The virtual packages a lock for `platform` assumes."""
    from rattler import BuildString, PackageName, Version
    from rattler.virtual_package import GenericVirtualPackage

    from mlkit.env.conda import detect_virtual_packages

    if platform == current_platform():
        vps = detect_virtual_packages()
    else:
        vps = [
            GenericVirtualPackage(PackageName(n), Version(v), BuildString(b))
            for n, v, b in DEFAULT_VIRTUAL.get(platform, [])
        ]
    if cuda:
        vps = [vp for vp in vps if vp.name.normalized != "__cuda"]
        if not platform.startswith("osx"):
            vps.append(GenericVirtualPackage(PackageName("__cuda"), Version(cuda), BuildString("0")))
    return vps


@dataclass(frozen=True)
class LockResult:
    path: Path
    platforms: list[str]
    packages: int
    virtual_packages: dict[str, str]
    notes: list[str]


def lock_project(
    project_dir: Path,
    env_ref: EnvRef | None,
    platforms: list[str] | None = None,
    *,
    cuda: str | None = None,
    progress=None,
) -> LockResult:
    """Solve conda.yaml for each platform and write conda-lock.yml next to it."""
    import yaml

    from mlkit.env.conda import channel_url, describe_virtual_packages, solve
    from mlkit.env.spec import LOCKFILE_NAME, load_spec, spec_canonical

    spec = load_spec(Path(project_dir), env_ref)
    if spec is None or spec.kind != "conda":
        raise EnvSpecError(
            "mlkit env lock: the project has no conda.yaml",
            hint="lockfiles are made from a conda environment file (conda_env in MLproject)",
        )
    platforms = list(dict.fromkeys(platforms or [current_platform()]))
    for p in platforms:
        if p not in KNOWN_PLATFORMS:
            raise UsageError(f"--platform {p!r}: unknown; one of {', '.join(KNOWN_PLATFORMS)}")
    entries: list[dict] = []
    vps_text: dict[str, str] = {}
    notes: list[str] = []
    content_hash: dict[str, str] = {}
    canonical = spec_canonical(spec)
    for platform in platforms:
        vps = virtual_packages_for(platform, cuda)
        vps_text[platform] = describe_virtual_packages(vps)
        if progress:
            progress(f"solving {spec.file_label} for {platform}")
        if not any(vp.name.normalized == "__cuda" for vp in vps) and not platform.startswith("osx"):
            notes.append(
                f"{platform}: locked without __cuda (CPU builds); use --cuda 12.4 to lock GPU builds"
            )
        records = solve(spec, platform, vps)
        python_version = None
        for r in records:
            entries.append(_conda_entry(r, platform))
            if r.name.normalized == "python":
                python_version = str(r.version)
        if spec.pip:
            entries.extend(_pip_entries(spec, platform, python_version, Path(project_dir), progress))
        payload = json.dumps({"spec": canonical, "platform": platform}, sort_keys=True)
        content_hash[platform] = hashlib.sha256(payload.encode()).hexdigest()
    lockfile = spec.source.parent / LOCKFILE_NAME
    base = spec.source.parent
    doc = {
        "version": 1,
        "metadata": {
            "content_hash": content_hash,
            "channels": [
                {"url": channel_url(c, base), "used_env_vars": []}
                for c in (spec.channels or ("conda-forge",))
            ],
            "platforms": platforms,
            "sources": [spec.source.name],
            "custom_metadata": {
                "mlkit.spec_hash": spec.spec_hash,
                **{f"mlkit.virtual_packages.{p}": v for p, v in vps_text.items()},
            },
        },
        "package": sorted(entries, key=lambda e: (e["platform"], e["manager"], e["name"])),
    }
    header = (
        "# This lock file was generated by mlkit env lock in conda-lock's format. DO NOT EDIT!\n"
        f"# Install it with `mlkit env create PROJECT` or `conda-lock install -p PREFIX {LOCKFILE_NAME}`.\n"
    )
    text = header + yaml.safe_dump(doc, sort_keys=False, width=1000)
    fsio.atomic_write(lockfile, text, error=EnvBuildError)
    return LockResult(lockfile, platforms, len(entries), vps_text, notes)


def _hex(value) -> str | None:
    if value is None:
        return None
    return value.hex() if isinstance(value, (bytes, bytearray)) else str(value)


def _conda_entry(record, platform: str) -> dict:
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


def _pip_entries(spec, platform: str, python_version: str | None, project_dir: Path, progress) -> list[dict]:
    import sys
    import tempfile

    from mlkit.env.spec import python_request
    from mlkit.env.uv import find_uv, source_args, uv_environ
    from mlkit.runner import proc as procs

    if python_version:
        py = ".".join(python_version.split(".")[:2])
    else:
        py = python_request(spec.python) or ".".join(map(str, sys.version_info[:2]))
    if progress:
        progress(f"resolving the pip part for {platform} (python {py}) with uv")
    with tempfile.TemporaryDirectory(prefix="mlkit-lock-") as tmp:
        req = Path(tmp) / "requirements.in"
        req.write_text("\n".join(p.text for p in spec.pip if not p.constraint) + "\n", encoding="utf-8")
        out = Path(tmp) / "pylock.toml"
        argv = [find_uv(), "pip", "compile", str(req), "--format", "pylock.toml", "-o", str(out)]
        argv += ["--python-version", py, "--no-header", "--quiet"]
        if platform in PY_PLATFORM:
            argv += ["--python-platform", PY_PLATFORM[platform]]
        constraints = [p.text for p in spec.pip if p.constraint]
        if constraints:
            con = Path(tmp) / "constraints.txt"
            con.write_text("\n".join(constraints) + "\n", encoding="utf-8")
            argv += ["-c", str(con)]
        argv += source_args()
        env = uv_environ()
        overrides = {**{k: None for k in os.environ if k not in env}, **env}
        proc = procs.run(argv, cwd=project_dir, env=overrides, capture_output=True, text=True)
        if proc.returncode != 0:
            from mlkit.env.conda import brief

            last = [ln for ln in proc.stderr.splitlines() if ln.strip()]
            raise EnvBuildError(
                f"{spec.file_label}: the pip section cannot be resolved for {platform}: "
                f"{(last[0] if last else 'uv pip compile failed').strip()}",
                hint=brief(" ".join(last[1:4])) or None,
            )
        data = _read_toml(out)
    entries = []
    for pkg in data.get("packages", []):
        url, sha = _pick_artifact(pkg, platform, py)
        if url is None:
            raise EnvBuildError(f"pip package {pkg.get('name')} has no downloadable file for {platform}")
        entries.append(
            {
                "name": pkg["name"],
                "version": str(pkg.get("version", "")),
                "manager": "pip",
                "platform": platform,
                "dependencies": {},
                "url": url,
                "hash": {"sha256": sha} if sha else {},
                "category": "main",
                "optional": False,
            }
        )
    return entries


def _read_toml(path: Path) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    return tomllib.loads(path.read_text(encoding="utf-8"))


def _wheel_fits(filename: str, platform: str, py: str) -> bool:
    parts = filename[: -len(".whl")].split("-")
    if len(parts) < 5:
        return False
    pytag, abitag, plat = parts[-3], parts[-2], parts[-1]
    major, minor = py.split(".")[:2]
    py_ok = any(t in (f"py{major}", f"cp{major}{minor}", f"py{major}{minor}") for t in pytag.split("."))
    py_ok = py_ok or (
        abitag == "abi3" and pytag.startswith(f"cp{major}") and int(pytag[3:] or 0) <= int(minor)
    )
    if not py_ok:
        return False
    if plat == "any":
        return True
    arch = {"linux-64": "x86_64", "linux-aarch64": "aarch64", "linux-ppc64le": "ppc64le",
            "osx-64": "x86_64", "osx-arm64": "arm64", "win-64": "amd64"}.get(platform, "")  # fmt: skip
    if platform.startswith("linux"):
        return "linux" in plat and arch in plat
    if platform.startswith("osx"):
        return "macosx" in plat and (arch in plat or "universal" in plat)
    if platform.startswith("win"):
        return plat == "win_amd64"
    return False


def _pick_artifact(pkg: dict, platform: str, py: str) -> tuple[str | None, str | None]:
    wheels = pkg.get("wheels") or []
    chosen = next((w for w in wheels if _wheel_fits(_artifact_name(w), platform, py)), None)
    if chosen is None and pkg.get("sdist"):
        chosen = pkg["sdist"]
    if chosen is None and wheels:
        chosen = wheels[0]
    if chosen is None:
        return None, None
    url = chosen.get("url")
    if url is None and chosen.get("path"):
        url = Path(chosen["path"]).resolve().as_uri()
    return url, (chosen.get("hashes") or {}).get("sha256")


def _artifact_name(artifact: dict) -> str:
    if artifact.get("name"):
        return artifact["name"]
    return (artifact.get("url") or artifact.get("path") or "").rsplit("/", 1)[-1]
