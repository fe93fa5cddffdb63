"""Where things live. Precedence everywhere: command-line flag > MLKIT_* variable > default.

Every path mlkit uses outside the tracking store comes from a function here, so tests can point
them all at a temporary directory with environment variables.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from urllib.parse import unquote, urlparse

from mlkit.errors import UnsafeStateError, UsageError


def tracking_root(flag: str | os.PathLike[str] | None = None) -> Path:
    """The store root: --store > MLKIT_TRACKING_URI > MLFLOW_TRACKING_URI (file only) > ./mlruns.
    An empty --store is refused (UsageError): `--store "$STORE"` with STORE unset must not write to
    ./mlruns of whatever directory cron started in."""
    if isinstance(flag, str) and not flag.strip():
        raise UsageError(
            f'--store {flag!r}: the store path is empty (an unset variable in --store "$VAR"?)',
            hint="give the store's directory, or leave --store out for MLKIT_TRACKING_URI or ./mlruns",
        )
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
    if parsed.scheme == "file" and parsed.netloc not in ("", "localhost"):
        raise UsageError(
            f"{origin}={value!r}: names a store on host {parsed.netloc!r}; mlkit's store is a local directory",
            hint="mount it here and give its local path, or write file:///path (three slashes)",
        )
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

    MLKIT_STATE_DIR > /tmp/mlkit-state. Open it with `open_state_dir`, never by path: another user
    may have planted something there (docs/gpus.md, "Shared state: threat model").
    """
    if os.environ.get("MLKIT_STATE_DIR"):
        return Path(os.environ["MLKIT_STATE_DIR"]).expanduser()
    return Path("/tmp/mlkit-state")  # not $TMPDIR: schedulers set it per job, and leases must be host-wide


LOCKS_DIR = "locks"  # `mlkit run --lock NAME` files, in the state dir


def open_state_dir(*, create: bool = True) -> int:
    """Open and check the host state dir (fsio.open_dir); returns its descriptor (caller closes).

    Refused (UnsafeStateError) when it is a link or not a directory, is owned by another non-root
    user, or is group/world-writable without the sticky bit. Made when missing: by root, shared
    (mode 1777, like /tmp, with `locks/` beside it so no user owns that); by anyone else, private
    (0700: a single-user box; other users are refused and told to ask an admin for a shared one).
    """
    # import budget: fsio loads only when a state dir is opened, not for mlkit --help
    from mlkit import fsio

    path = host_state_dir()
    root = os.geteuid() == 0
    new = create and root and not os.path.lexists(path)
    fd = fsio.open_dir(path, create=create, shared=root)
    if new and state_file_mode(fd) == 0o666:
        with contextlib.suppress(UnsafeStateError, OSError):
            os.close(fsio.open_dir(LOCKS_DIR, dir_fd=fd, create=True, shared=True))
    return fd


def state_file_mode(dir_fd: int) -> int:
    """The mode of files in a state dir: shared by its users (0666, 0660) in a sticky
    group/world-writable directory, else private (0600)."""
    dir_mode = os.fstat(dir_fd).st_mode
    if not dir_mode & stat.S_ISVTX:
        return 0o600
    return 0o600 | (0o060 if dir_mode & 0o020 else 0) | (0o006 if dir_mode & 0o002 else 0)


def ensure_shared_dir(path: Path) -> Path:
    """Make and check a state dir as `open_state_dir` does (fsio.open_dir); returns `path`."""
    # import budget: fsio loads only when a state dir is opened, not for mlkit --help
    from mlkit import fsio

    os.close(fsio.open_dir(path, create=True, shared=os.geteuid() == 0))
    return path


def traceback_enabled() -> bool:
    """MLKIT_TRACEBACK=1 shows Python tracebacks for mlkit's own errors."""
    return os.environ.get("MLKIT_TRACEBACK", "") not in ("", "0", "false", "no")
