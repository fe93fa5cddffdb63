"""Checking and resolving parameter values by type (`string`, `float`, `int`, `path`, `uri`)."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

from mlkit.errors import ProjectError

_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(
    r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?(inf|infinity|nan)", re.IGNORECASE
)
_DOWNLOADABLE = ("http", "https", "ftp")


def check_value(ptype: str, value: str) -> str | None:
    """What is wrong with `value` for a parameter of type `ptype`, or None when it is fine."""
    if ptype == "int" and not _INT.fullmatch(value):
        return f"{value!r} is not an int"
    if ptype == "float" and not _FLOAT.fullmatch(value):
        return f"{value!r} is not a float"
    if ptype == "float" and math.isinf(float(value)) and not value.strip("+-").lower().startswith("inf"):
        return f"{value!r} is too large for a float"
    if ptype == "uri" and not urlparse(value).scheme:
        return f"{value!r} is not a URI (it has no scheme such as file:, s3: or https:)"
    return None


def local_path(value: str) -> str | None:
    """The local file system path `value` names (a plain path or a file: URI), or None if remote."""
    parsed = urlparse(value)
    if not parsed.scheme:
        return value
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
        return unquote(parsed.path)
    return None


def resolve_path(
    value: str, *, base: Path, index: int, storage_dir: Path | None, key: str, default: bool = False
) -> str:
    """A `path` value made absolute (relative to `base`), or a remote one downloaded to `storage_dir`.
    `default`: the value is the MLproject's default (relative to the project), not a -P value."""
    local = local_path(value)
    if local is not None:
        full = os.path.abspath(os.path.join(base, local))
        if not os.path.exists(full):
            hint = (
                f"a relative default is taken from the project directory ({base}): create the file "
                "there, fix the default, or pass -P with an existing path"
                if default
                else "relative -P paths are taken from the directory you run mlkit in; pass an existing path"
            )
            raise ProjectError(f"{key}: {value!r}: no such file or directory (looked for {full})", hint=hint)
        return full
    if storage_dir is None:
        return value
    scheme = urlparse(value).scheme
    if scheme not in _DOWNLOADABLE:
        raise ProjectError(
            f"{key}: {value!r}: mlkit cannot download {scheme}:// paths",
            hint="download it first and pass the local path, or declare the parameter `type: uri` and read it in your code",
        )
    return _download(value, storage_dir / f"param_{index}", key)


def _download(url: str, target_dir: Path, key: str) -> str:
    import shutil  # import budget: shutil (bz2, lzma) loads only for a download
    from urllib.request import urlopen  # import budget: http.client and ssl load only for a URI download

    target_dir.mkdir(parents=True, exist_ok=True)
    name = os.path.basename(unquote(urlparse(url).path)) or "download"
    target = target_dir / name
    try:
        with urlopen(url, timeout=60) as response, open(target, "wb") as out:  # noqa: S310 - http(s)/ftp only
            shutil.copyfileobj(response, out, 1 << 20)
    except OSError as exc:
        raise ProjectError(
            f"{key}: could not download {url!r}: {exc}", hint="check the URL and your network"
        ) from exc
    return str(target)
