"""What distributions the running interpreter imports from: the names and versions of the
`*.dist-info` / `*.egg-info` directories on `sys.path` (a few milliseconds, not the ~0.3 s of
`importlib.metadata.distributions()`). Used by the `auto` manager's check (mlkit.env.check) and by
the env memo's keys (mlkit.env.spec)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path


def canon(name: str) -> str:
    """A distribution name as PEP 503 normalises it (`Foo_Bar.baz` -> `foo-bar-baz`)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_distributions() -> dict[str, str | Path]:
    """canonical name -> version (from the directory name) or the metadata dir when it has none."""
    found: dict[str, str | Path] = {}
    for entry in sys.path:
        if not entry or not os.path.isdir(entry):
            continue
        try:
            names = os.listdir(entry)
        except OSError:
            continue
        for item in names:
            if item.endswith(".dist-info"):
                stem = item[: -len(".dist-info")]
            elif item.endswith(".egg-info"):
                stem = item[: -len(".egg-info")]
            else:
                continue
            name, _, version = stem.partition("-")
            key = canon(name)
            if key in found:
                continue  # the first on sys.path wins, as for imports
            if version and "-py" in version:  # egg-info: name-1.0-py3.11.egg-info
                version = version.split("-py", 1)[0]
            found[key] = version if version else Path(entry) / item
    return found
