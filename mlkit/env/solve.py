"""`mlkit env lock`: solve conda.yaml for each platform and write `conda-lock.yml` next to it.

One solve per platform with rattler, with that platform's virtual packages (this machine's,
detected, for the current platform; conservative defaults for the others; `__cuda` only when
detected or asked for with `--cuda`). The pip part is resolved with `uv pip compile` for each
platform and recorded as `manager: pip` entries with the wheel URL and sha256; the wheel is the
best one for the target that `packaging.tags` accepts (its python, its glibc or macOS version).
The file format lives in `mlkit.env.lockfile`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.tags import Tag, compatible_tags, cpython_tags, mac_platforms
from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import InvalidVersion
from rattler import BuildString, PackageName, Version
from rattler.virtual_package import GenericVirtualPackage

from mlkit import proc as procs
from mlkit.env.conda import brief, channel_url, describe_virtual_packages, detect_virtual_packages, solve
from mlkit.env.lockfile import LOCKFILE_NAME, conda_entry, current_platform, pip_entry, write_lockfile
from mlkit.env.ref import EnvRef
from mlkit.env.spec import EnvSpec, load_spec, python_request, spec_canonical
from mlkit.env.uv import find_uv, source_args, uv_environ
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
# the CPU architecture in wheel platform tags, per conda platform
WHEEL_ARCH = {
    "linux-64": "x86_64",
    "linux-aarch64": "aarch64",
    "linux-ppc64le": "ppc64le",
    "osx-64": "x86_64",
    "osx-arm64": "arm64",
    "win-64": "amd64",
}


def virtual_packages_for(platform: str, cuda: str | None) -> list:
    """The virtual packages a lock for `platform` assumes."""
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
class LockfileResult:
    path: Path
    platforms: list[str]
    packages: int
    virtual_packages: dict[str, str]
    notes: list[str]


def make_lockfile(
    project_dir: Path,
    env_ref: EnvRef | None,
    platforms: list[str] | None = None,
    *,
    cuda: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> LockfileResult:
    """Solve conda.yaml for each platform and write conda-lock.yml next to it."""
    spec = load_spec(Path(project_dir), env_ref)
    if spec is None or spec.kind != "conda":
        raise EnvSpecError(
            "mlkit env lock: the project has no conda.yaml",
            hint="lockfiles are made from a conda environment file (conda_env in MLproject)",
        )
    if cuda is not None and not re.fullmatch(r"\d+(\.\d+){0,2}", cuda):
        raise UsageError(
            f"--cuda {cuda!r}: not a CUDA version", hint="give the driver's CUDA version, e.g. --cuda 12.4"
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
            entries.append(conda_entry(r, platform))
            if r.name.normalized == "python":
                python_version = str(r.version)
        if spec.pip:
            entries.extend(_pip_entries(spec, platform, python_version, vps, Path(project_dir), progress))
        payload = json.dumps({"spec": canonical, "platform": platform}, sort_keys=True)
        content_hash[platform] = hashlib.sha256(payload.encode()).hexdigest()
    lockfile = spec.source.parent / LOCKFILE_NAME
    base = spec.source.parent
    write_lockfile(
        lockfile,
        platforms=platforms,
        channels=[channel_url(c, base) for c in (spec.channels or ("conda-forge",))],
        sources=[spec.source.name],
        spec_hash=spec.spec_hash,
        virtual_packages=vps_text,
        content_hash=content_hash,
        entries=entries,
    )
    return LockfileResult(lockfile, platforms, len(entries), vps_text, notes)


def _pip_entries(
    spec: EnvSpec,
    platform: str,
    python_version: str | None,
    vps: list,
    project_dir: Path,
    progress: Callable[[str], None] | None,
) -> list[dict]:
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
            last = [ln for ln in proc.stderr.splitlines() if ln.strip()]
            raise EnvBuildError(
                f"{spec.file_label}: the pip section cannot be resolved for {platform}: "
                f"{(last[0] if last else 'uv pip compile failed').strip()}",
                hint=brief(" ".join(last[1:4])) or None,
            )
        data = _read_toml(out)
    supported = wheel_tags(platform, py, _virtual_version(vps, "__glibc"), _virtual_version(vps, "__osx"))
    entries = []
    for pkg in data.get("packages", []):
        url, sha = _pick_artifact(pkg, supported)
        if url is None:
            raise EnvBuildError(
                f"pip package {pkg.get('name')} has no downloadable file for {platform}",
                hint=f"its wheels do not fit python {py} on {platform}; pin a version that has one, "
                "or an sdist",
            )
        entries.append(pip_entry(pkg["name"], str(pkg.get("version", "")), platform, url, sha))
    return entries


def _read_toml(path: Path) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib  # the standard library's since 3.11; only pylock.toml needs it
    else:
        import tomli as tomllib  # Python 3.10 has no tomllib; tomli is the same parser (when installed)
    return tomllib.loads(path.read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------ wheel tags


def _virtual_version(vps: list, name: str) -> str | None:
    return next((str(vp.version) for vp in vps if vp.name.normalized == name), None)


def _version_tuple(text: str | None, default: str) -> tuple[int, int]:
    """("2.35", _) -> (2, 35); the first "X.Y" in `text`, else `default`'s."""
    match = re.search(r"(\d+)\.(\d+)", text or "")
    major, minor = match.groups() if match else default.split(".")
    return int(major), int(minor)


def _linux_platforms(arch: str, glibc: tuple[int, int]) -> list[str]:
    """manylinux tags for `arch` up to `glibc`, newest first, then plain `linux_<arch>`, as pip orders
    them. packaging.tags builds these only for the running machine (it asks the C library), so the
    target's list is made here: `manylinux_2_N_<arch>` for N from glibc's minor down to 17 (5 on
    x86_64), with the legacy aliases manylinux2014 (2.17), manylinux2010 (2.12), manylinux1 (2.5)."""
    if glibc[0] != 2:
        return [f"linux_{arch}"]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    lowest = 5 if arch in ("x86_64", "i686") else 17
    tags = []
    for minor in range(glibc[1], lowest - 1, -1):
        tags.append(f"manylinux_2_{minor}_{arch}")
        if minor in legacy and (minor == 17 or arch in ("x86_64", "i686")):
            tags.append(f"{legacy[minor]}_{arch}")
    return [*tags, f"linux_{arch}"]


def wheel_tags(platform: str, python: str, glibc: str | None = None, macos: str | None = None) -> list[Tag]:
    """The wheel tags a CPython `python` ("3.11") on `platform` installs, best first (pip's order).

    Linux: manylinux up to `glibc` (default 2.28, as for other machines' locks), never musllinux
    (conda's Linux is glibc). macOS: up to `macos` (default: the platform's oldest, 10.15 / 11.0).
    """
    major, minor = _version_tuple(python, "3.11")
    arch = WHEEL_ARCH.get(platform, "")
    platforms: Sequence[str]
    if platform.startswith("linux"):
        platforms = _linux_platforms(arch, _version_tuple(glibc, "2.28"))
    elif platform.startswith("osx"):
        default = "11.0" if platform == "osx-arm64" else "10.15"
        platforms = list(mac_platforms(_version_tuple(macos, default), arch))
    elif platform == "win-64":
        platforms = ["win_amd64"]
    else:
        platforms = []
    version = (major, minor)
    interpreter = f"cp{major}{minor}"
    return [
        *cpython_tags(version, abis=[interpreter], platforms=platforms),
        *compatible_tags(version, interpreter=interpreter, platforms=platforms),
    ]


def _wheel_rank(filename: str, rank: dict[Tag, int]) -> int | None:
    """The best (lowest) rank among the wheel's tags, or None when it does not install here."""
    try:
        _name, _version, _build, tags = parse_wheel_filename(filename)
    except (InvalidWheelFilename, InvalidVersion):
        return None
    ranks = [rank[t] for t in tags if t in rank]
    return min(ranks) if ranks else None


def _pick_artifact(pkg: dict[str, Any], supported: list[Tag]) -> tuple[str | None, str | None]:
    """The file to lock for a pylock.toml package: its best-fitting wheel, else its sdist."""
    rank = {tag: i for i, tag in enumerate(supported)}
    fitting = []
    for i, wheel in enumerate(pkg.get("wheels") or []):
        r = _wheel_rank(_artifact_name(wheel), rank)
        if r is not None:
            fitting.append((r, i, wheel))
    chosen = min(fitting, key=lambda f: (f[0], f[1]))[2] if fitting else pkg.get("sdist")
    if not chosen:
        return None, None
    url = chosen.get("url")
    if url is None and chosen.get("path"):
        url = Path(chosen["path"]).resolve().as_uri()
    return url, (chosen.get("hashes") or {}).get("sha256")


def _artifact_name(artifact: dict[str, Any]) -> str:
    if artifact.get("name"):
        return artifact["name"]
    return (artifact.get("url") or artifact.get("path") or "").rsplit("/", 1)[-1]
