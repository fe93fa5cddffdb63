"""Where things live. Precedence everywhere: command-line flag > MLKIT_* variable > default.

Every path mlkit uses outside the tracking store comes from a function here, so tests can point
them all at a temporary directory with environment variables.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

from mlkit.errors import UsageError


def tracking_root(flag: str | os.PathLike[str] | None = None) -> Path:
    """The store root: --store > MLKIT_TRACKING_URI > MLFLOW_TRACKING_URI (file only) > ./mlruns."""
    for value, origin in (
        (flag, "--store"),
        (os.environ.get("MLKIT_TRACKING_URI"), "MLKIT_TRACKING_URI"),
        (os.environ.get("MLFLOW_TRACKING_URI"), "MLFLOW_TRACKING_URI"),
    ):
        if value:
            return _path_from_uri(str(value), origin)
    return Path.cwd() / "mlruns"


def _path_from_uri(value: str, origin: str) -> Path:
    parsed = urlparse(value)
    if parsed.scheme in ("", "file") or (len(parsed.scheme) == 1 and os.name == "nt"):
        path = unquote(parsed.path) if parsed.scheme == "file" else value
        return Path(path).expanduser().resolve()
    raise UsageError(
        f"{origin}={value!r}: mlkit's store is a directory, not a {parsed.scheme}:// server",
        hint="point it at a local mlruns/ directory, e.g. --store ./mlruns or file:///data/mlruns",
    )


def cache_dir() -> Path:
    """mlkit's per-user cache: MLKIT_CACHE_DIR > $XDG_CACHE_HOME/mlkit > ~/.cache/mlkit."""
    if os.environ.get("MLKIT_CACHE_DIR"):
        return Path(os.environ["MLKIT_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mlkit"


def env_dir() -> Path:
    """Built environments, one directory per content hash: MLKIT_ENV_DIR > <cache>/envs."""
    if os.environ.get("MLKIT_ENV_DIR"):
        return Path(os.environ["MLKIT_ENV_DIR"]).expanduser()
    return cache_dir() / "envs"


def host_state_dir() -> Path:
    """Host-wide state every mlkit process on this machine shares (GPU leases, run locks).

    MLKIT_STATE_DIR > /tmp/mlkit-state. The default is shared between users so two users of one box
    never get the same GPU; it is created world-writable with the sticky bit, like /tmp.
    """
    if os.environ.get("MLKIT_STATE_DIR"):
        return Path(os.environ["MLKIT_STATE_DIR"]).expanduser()
    return Path("/tmp/mlkit-state")  # not $TMPDIR: schedulers set it per job, and leases must be host-wide


def ensure_shared_dir(path: Path) -> Path:
    """Create a directory that every user of the host may write to (mode 1777), if missing."""
    if not path.exists():
        path.mkdir(parents=True, exist_ok=True)
        try:
            path.chmod(0o1777)
        except OSError:  # not ours to change (another user created it first): fine
            pass
    return path


def traceback_enabled() -> bool:
    """MLKIT_TRACEBACK=1 shows Python tracebacks for mlkit's own errors."""
    return os.environ.get("MLKIT_TRACEBACK", "") not in ("", "0", "false", "no")
