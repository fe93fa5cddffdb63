"""A per-user memo of what reading an environment file gave, so that running a project whose
conda.yaml / python_env.yaml has not changed does not import py-rattler and packaging (~40-50 ms
of every `mlkit run` on a small VM) to validate it and check the current environment again.

Two kinds of entry, each the answer of a pure function of what its key covers:

- `spec`: `load_spec`'s EnvSpec, keyed by the file's path and bytes, the lockfile's bytes, the
  running Python's X.Y, mlkit's version and the installed py-rattler and packaging versions; the
  entry lists every `-r`/`-c` file read with its digest, checked again on every hit. With a
  conda-lock.yml it holds the lockfile's content hash and the spec hash it was made from, so a
  run of a locked environment neither parses the lockfile nor checks its freshness by reading it.
- `check`: `check_current`'s answer, keyed by the spec's hash, this interpreter (path, version,
  platform: what pip markers read) and the distributions installed where it imports from.

It is a cache, never the truth: a memo that is missing, unreadable, malformed, too large, a link,
not ours, or writable by another user is ignored (and replaced by the next write); a write that
fails is dropped. It lives in `settings.cache_dir()` (made 0700), written atomically with mode 0600.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any

from mlkit import fsio, settings
from mlkit.digest import sha256_hex
from mlkit.errors import MlkitError

MEMO_FILE = "env-memo.json"
MAX_BYTES = 1 << 20  # a bigger file is not ours: ignored
MAX_ENTRIES = 200  # per kind; the oldest go first
MAX_FILE_BYTES = 64 << 20  # a bigger environment, requirements or lock file is never remembered
_VERSION = 1


def key(*parts: object) -> str:
    """A memo key: the digest of `parts` (JSON-encoded)."""
    return sha256_hex(json.dumps(parts, separators=(",", ":"), default=str).encode("utf-8"))


def digest_file(path: str | os.PathLike[str]) -> str | None:
    """The sha256 of a regular file's bytes; None when there is none, it cannot be read or it is
    over MAX_FILE_BYTES (a FIFO put in its place is not waited on)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FILE_BYTES:
            return None
        with os.fdopen(os.dup(fd), "rb") as fh:
            return sha256_hex(fh.read(MAX_FILE_BYTES + 1))
    except OSError:
        return None
    finally:
        os.close(fd)


def get(kind: str, memo_key: str) -> Any:
    """The value stored under (`kind`, `memo_key`), or None."""
    entries = _read().get(kind)
    return entries.get(memo_key) if isinstance(entries, dict) else None


def put(kind: str, memo_key: str, value: Any) -> None:
    """Store `value` (JSON-ready) under (`kind`, `memo_key`); never raises."""
    try:
        memo = _read()
        entries = memo.get(kind)
        if not isinstance(entries, dict):
            entries = memo[kind] = {}
        entries.pop(memo_key, None)
        entries[memo_key] = value
        memo["v"] = _VERSION
        while True:
            data = json.dumps(memo, separators=(",", ":")).encode("utf-8")
            if (len(entries) <= MAX_ENTRIES and len(data) <= MAX_BYTES) or not entries:
                break
            entries.pop(next(iter(entries)))  # the oldest first
        if len(data) > MAX_BYTES:
            return
        fd = fsio.open_dir(settings.cache_dir(), create=True)
        try:
            fsio.atomic_write(MEMO_FILE, data, mode=0o600, dir_fd=fd)
        finally:
            os.close(fd)
    except (MlkitError, OSError, ValueError, TypeError):
        return


def _read() -> dict[str, Any]:
    """The memo's content, or {} when there is none that can be trusted."""
    try:
        dir_fd = fsio.open_dir(settings.cache_dir())
    except (MlkitError, OSError):
        return {}
    try:
        fd = fsio.open_file(MEMO_FILE, dir_fd=dir_fd)
    except (MlkitError, OSError):
        return {}
    finally:
        os.close(dir_fd)
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or st.st_size > MAX_BYTES:
            return {}  # someone else could have written it
        with os.fdopen(os.dup(fd), "rb") as fh:
            memo = json.loads(fh.read(MAX_BYTES + 1))
    except (OSError, ValueError, RecursionError):
        return {}
    finally:
        os.close(fd)
    return memo if isinstance(memo, dict) and memo.get("v") == _VERSION else {}
