"""Which wheel `mlkit env lock` records for a platform: packaging.tags decides, as pip would.

`_pick_artifact` gets one package of uv's pylock.toml (its wheels and sdist) and the tags the
target installs; the oracle for "installs" is pip's own tag order from `packaging.tags`.
"""

from __future__ import annotations

import pytest
from packaging.tags import Tag

from mlkit.env.solve import _pick_artifact, wheel_tags

BASE = "https://files.example/pkg"


def pkg(*names: str, sdist: bool = False) -> dict:
    out: dict = {
        "name": "pkg",
        "version": "1.0",
        "wheels": [{"url": f"{BASE}/{n}", "hashes": {"sha256": n}} for n in names],
    }
    if sdist:
        out["sdist"] = {"url": f"{BASE}/pkg-1.0.tar.gz", "hashes": {"sha256": "sdist"}}
    return out


def picked(
    package: dict, platform: str, python: str = "3.11", glibc: str | None = "2.28", macos: str | None = None
):
    url, sha = _pick_artifact(package, wheel_tags(platform, python, glibc, macos))
    return None if url is None else url.rsplit("/", 1)[-1]


def test_musllinux_is_refused_for_linux_64() -> None:
    musl = "pkg-1.0-cp311-cp311-musllinux_1_2_x86_64.whl"
    assert picked(pkg(musl), "linux-64") is None
    assert picked(pkg(musl, sdist=True), "linux-64") == "pkg-1.0.tar.gz"
    many = "pkg-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    assert picked(pkg(musl, many), "linux-64") == many  # whatever the order of the wheels
    assert Tag("cp311", "cp311", "musllinux_1_2_x86_64") not in wheel_tags("linux-64", "3.11", "2.35")


def test_manylinux_newer_than_the_target_glibc_is_refused() -> None:
    new = "pkg-1.0-cp311-cp311-manylinux_2_34_x86_64.whl"
    old = "pkg-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    assert picked(pkg(new), "linux-64", glibc="2.28") is None
    assert picked(pkg(new, old), "linux-64", glibc="2.28") == old
    assert picked(pkg(old, new), "linux-64", glibc="2.35") == new  # the most specific one that fits, as pip
    assert picked(pkg(new), "linux-64", glibc=None) is None  # default target: glibc 2.28
    legacy = "pkg-1.0-cp311-cp311-manylinux2010_x86_64.whl"
    assert picked(pkg(legacy), "linux-64", glibc="2.28") == legacy


def test_abi3_with_several_python_tags_does_not_crash() -> None:
    """`cp37.cp38.cp39-abi3` once made the matcher compute int("7.cp38.cp39")."""
    abi3 = "pkg-1.0-cp37.cp38.cp39-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    assert picked(pkg(abi3), "linux-64", python="3.11") == abi3  # abi3 from 3.9 on serves 3.11
    assert picked(pkg(abi3), "linux-64", python="3.12") == abi3
    newer = "pkg-1.0-cp312-abi3-manylinux_2_17_x86_64.whl"
    assert picked(pkg(newer), "linux-64", python="3.11") is None  # needs 3.12 or later


@pytest.mark.parametrize(
    ("platform", "wheel", "fits"),
    [
        ("linux-64", "pkg-1.0-py3-none-any.whl", True),
        ("linux-64", "pkg-1.0-cp310-cp310-manylinux_2_17_x86_64.whl", False),  # another python
        ("linux-64", "pkg-1.0-cp311-cp311-manylinux_2_17_aarch64.whl", False),  # another CPU
        ("linux-aarch64", "pkg-1.0-cp311-cp311-manylinux_2_17_aarch64.whl", True),
        ("linux-64", "pkg-1.0-cp311-cp311-win_amd64.whl", False),
        ("win-64", "pkg-1.0-cp311-cp311-win_amd64.whl", True),
        ("win-64", "pkg-1.0-cp311-cp311-win32.whl", False),
        ("osx-arm64", "pkg-1.0-cp311-cp311-macosx_11_0_arm64.whl", True),
        ("osx-arm64", "pkg-1.0-cp311-cp311-macosx_10_9_universal2.whl", True),
        ("osx-arm64", "pkg-1.0-cp311-cp311-macosx_14_0_arm64.whl", False),  # newer than macOS 11
        ("osx-arm64", "pkg-1.0-cp311-cp311-macosx_10_9_x86_64.whl", False),
        ("osx-64", "pkg-1.0-cp311-cp311-macosx_10_9_x86_64.whl", True),
        ("linux-64", "not-a-wheel-name.whl", False),
    ],
)
def test_platform_python_and_cpu_must_fit(platform: str, wheel: str, fits: bool) -> None:
    assert (picked(pkg(wheel), platform) == wheel) is fits


def test_local_path_wheels_become_file_urls(tmp_path) -> None:
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    package = {"name": "pkg", "version": "1.0", "wheels": [{"path": str(wheel), "hashes": {"sha256": "x"}}]}
    assert _pick_artifact(package, wheel_tags("linux-64", "3.11")) == (wheel.as_uri(), "x")
