"""Builders for the env tests: wheels, a wheelhouse, conda packages and a local conda channel.

Everything is made in the test's tmp dir and works offline: wheels are zipped by hand (a wheel is
a zip with a dist-info), conda packages are `.tar.bz2` archives with info/index.json,
info/paths.json and info/files, indexed with rattler's own indexer.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import tarfile
import zipfile
from pathlib import Path

import pytest


def make_wheel(dest: Path, name: str, version: str, files: dict[str, str], requires: list[str] = ()) -> Path:
    """A pure-Python wheel `name-version-py3-none-any.whl` holding `files` (path -> text)."""
    dest.mkdir(parents=True, exist_ok=True)
    dist = f"{name.replace('-', '_')}-{version}"
    info = f"{dist}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    contents = dict(files)
    contents[f"{info}/METADATA"] = meta
    contents[f"{info}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: mlkit-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record_lines = []
    for path, text in contents.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record_lines.append(f"{path},sha256={digest},{len(text.encode())}")
    record_lines.append(f"{info}/RECORD,,")
    contents[f"{info}/RECORD"] = "\n".join(record_lines) + "\n"
    wheel = dest / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in contents.items():
            zf.writestr(path, text)
    return wheel


@pytest.fixture
def wheelhouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A local wheelhouse with `tinypkg` 1.0 and 1.2; mlkit is pointed at it, offline."""
    house = tmp_path / "wheelhouse"
    make_wheel(house, "tinypkg", "1.0", {"tinypkg/__init__.py": "VALUE = 10\n"})
    make_wheel(house, "tinypkg", "1.2", {"tinypkg/__init__.py": "VALUE = 42\n"})
    monkeypatch.setenv("MLKIT_FIND_LINKS", str(house))
    monkeypatch.setenv("MLKIT_OFFLINE", "1")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.delenv("UV_FIND_LINKS", raising=False)
    return house


def make_conda_pkg(
    channel: Path,
    name: str,
    version: str,
    depends: list[str] = (),
    script: str | None = None,
    subdir="noarch",
) -> Path:
    """A tiny conda package with `bin/<name>` (a shell script printing `script` or its name)."""
    (channel / subdir).mkdir(parents=True, exist_ok=True)
    body = f"#!/bin/sh\necho {script or name}\n".encode()
    files = {f"bin/{name}": body}
    index = {
        "name": name,
        "version": version,
        "build": "0",
        "build_number": 0,
        "depends": list(depends),
        "license": "MIT",
        "subdir": subdir,
        "timestamp": 1700000000000,
    }
    if subdir == "noarch":
        index["noarch"] = "generic"
    paths = {
        "paths": [
            {
                "_path": p,
                "path_type": "hardlink",
                "sha256": hashlib.sha256(b).hexdigest(),
                "size_in_bytes": len(b),
            }
            for p, b in files.items()
        ],
        "paths_version": 1,
    }
    members = {
        **files,
        "info/index.json": json.dumps(index).encode(),
        "info/paths.json": json.dumps(paths).encode(),
        "info/files": ("\n".join(files) + "\n").encode(),
    }
    archive = channel / subdir / f"{name}-{version}-0.tar.bz2"
    with tarfile.open(archive, "w:bz2") as tf:
        for path, data in members.items():
            member = tarfile.TarInfo(path)
            member.size = len(data)
            member.mode = 0o755 if path.startswith("bin/") else 0o644
            tf.addfile(member, io.BytesIO(data))
    return archive


def make_python_conda_pkg(channel: Path, version: str | None = None) -> Path:
    """A linux-64 `python` conda package that is a real interpreter offline: a venv-shaped prefix.

    It holds `pyvenv.cfg` (home = this interpreter's bin) and `bin/python`, a symlink to this
    interpreter, so the installed conda prefix *is* a virtualenv: its own site-packages, into
    which the pip part gets installed. No network, no 30 MB python build.
    """
    import sys

    version = version or ".".join(map(str, sys.version_info[:3]))
    subdir = channel / "linux-64"
    subdir.mkdir(parents=True, exist_ok=True)
    # the base interpreter (not a venv's python: a venv's bin has no stdlib beside it)
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    host = base if base.exists() else Path(sys.executable)
    cfg = f"home = {host.parent}\ninclude-system-site-packages = false\nversion = {version}\n".encode()
    index = {
        "name": "python",
        "version": version,
        "build": "0",
        "build_number": 0,
        "depends": [],
        "license": "PSF-2.0",
        "subdir": "linux-64",
        "timestamp": 1700000000000,
    }
    paths = {
        "paths": [
            {
                "_path": "pyvenv.cfg",
                "path_type": "hardlink",
                "sha256": hashlib.sha256(cfg).hexdigest(),
                "size_in_bytes": len(cfg),
            },
            {"_path": "bin/python", "path_type": "softlink"},
        ],
        "paths_version": 1,
    }
    archive = subdir / f"python-{version}-0.tar.bz2"
    with tarfile.open(archive, "w:bz2") as tf:
        member = tarfile.TarInfo("pyvenv.cfg")
        member.size = len(cfg)
        tf.addfile(member, io.BytesIO(cfg))
        link = tarfile.TarInfo("bin/python")
        link.type = tarfile.SYMTYPE
        link.linkname = str(host)
        tf.addfile(link)
        for path, data in {
            "info/index.json": json.dumps(index).encode(),
            "info/paths.json": json.dumps(paths).encode(),
            "info/files": b"pyvenv.cfg\nbin/python\n",
        }.items():
            member = tarfile.TarInfo(path)
            member.size = len(data)
            tf.addfile(member, io.BytesIO(data))
    return archive


def index_channel(channel: Path) -> None:
    import rattler

    (channel / "noarch").mkdir(parents=True, exist_ok=True)
    asyncio.run(rattler.index.index_fs(channel, write_zst=False, write_shards=False, force=True))


@pytest.fixture
def conda_channel(tmp_path: Path) -> Path:
    """A local channel: hello 1.0 (needs world >=1), world 1.2, and a metadata-only python 3.11.7."""
    channel = tmp_path / "channel"
    make_conda_pkg(channel, "hello", "1.0", ["world >=1"], script="hello-from-conda")
    make_conda_pkg(channel, "world", "1.2")
    make_conda_pkg(channel, "world", "0.9")
    index_channel(channel)
    return channel


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def env_for(prepared) -> dict[str, str]:
    return {**os.environ, **prepared.env_vars}


@pytest.fixture
def kit():
    """The helper functions above, for tests (conftest modules are not importable by name)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        make_wheel=make_wheel,
        make_conda_pkg=make_conda_pkg,
        make_python_conda_pkg=make_python_conda_pkg,
        index_channel=index_channel,
        write=write,
        env_for=env_for,
    )
