"""Key, value and path checks, as MLflow's FileStore does them (mlflow-compat.md 4.7), and more.

MLflow 3.18's rules (`fullmatch` of `[/\\w.\\- :]*`, the path-safety rule, 250 characters), plus
what MLflow would take but not read back: a component longer than a file name may be (255 bytes)
and a name shaped like the store's own temp files (`.<name>.<pid>.<ns>.tmp`, which gc removes).
"""

from __future__ import annotations

import posixpath
import re

from mlkit.errors import InvalidInputError

MAX_KEY_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000
MAX_EXPERIMENT_NAME_LENGTH = 500

MAX_NAME_BYTES = 255  # one path component (NAME_MAX on Linux and macOS)

_KEY_RE = re.compile(r"[/\w.\- :]*")  # always fullmatch: `$` would let a trailing "\n" through
_TEMP_RE = re.compile(r"\..*\.\d+\.\d+\.tmp")  # fsio.temp_name's shape
_RUN_ID_RE = re.compile(r"[a-zA-Z0-9][\w\-]{0,255}")
_EXPERIMENT_ID_RE = re.compile(r"[a-zA-Z0-9][\w\-]{0,63}")

_KNOWN_KEYS: set[tuple[str, str]] = set()  # (kind, key) already validated: log_metric is hot


def validate_key(key: str, kind: str = "metric") -> str:
    """Raise InvalidInputError unless `key` is a safe metric/param/tag name; return it."""
    if (kind, key) in _KNOWN_KEYS:
        return key
    if not isinstance(key, str):
        raise InvalidInputError(
            f"{kind} key {key!r} is not a string", hint="pass the key as a str, e.g. 'loss'"
        )
    if not _KEY_RE.fullmatch(key):
        raise InvalidInputError(
            f"invalid {kind} key {key!r}: names may only contain alphanumerics, underscores (_), "
            "dashes (-), periods (.), spaces ( ), colon (:) and slashes (/)",
            hint="rename the key, e.g. replace other characters with '_'",
        )
    norm = posixpath.normpath(key)
    if norm != key or norm == "." or norm.startswith("..") or norm.startswith("/"):
        raise InvalidInputError(
            f"invalid {kind} key {key!r}: keys are file names in the store and must not resolve "
            f"to another name (this one resolves to {norm!r})",
            hint="use a relative name without '..', '.', '//', a leading or a trailing '/'",
        )
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidInputError(
            f"{kind} key {key[:40]!r}... is {len(key)} characters, more than {MAX_KEY_LENGTH}",
            hint="use a shorter key",
        )
    for part in key.split("/"):
        if len(part.encode("utf-8")) > MAX_NAME_BYTES:
            raise InvalidInputError(
                f"{kind} key {key[:40]!r}...: the part {part[:20]!r}... is {len(part.encode())} bytes in "
                f"UTF-8, more than a file name may be ({MAX_NAME_BYTES})",
                hint="use a shorter key, or split it with '/'",
            )
        if _TEMP_RE.fullmatch(part):
            raise InvalidInputError(
                f"invalid {kind} key {key!r}: {part!r} has the shape of the store's temp files",
                hint="rename the key (not '.<name>.<number>.<number>.tmp')",
            )
    if len(_KNOWN_KEYS) < 100_000:
        _KNOWN_KEYS.add((kind, key))
    return key


def validate_keys(keys: list[str] | tuple[str, ...], kind: str) -> list[str]:
    """Validate a batch of keys before any is written: each as `validate_key`, and no key may be
    a directory of another ('a' and 'a/b' cannot both be files)."""
    checked = [validate_key(key, kind) for key in keys]
    if len(checked) > 1:
        names = set(checked)
        for key in checked:
            parts = key.split("/")
            for i in range(1, len(parts)):
                prefix = "/".join(parts[:i])
                if prefix in names:
                    raise key_collision(kind, key, prefix)
    return checked


def key_collision(kind: str, key: str, other: str) -> InvalidInputError:
    """The error for two keys that cannot both be files ('a' and 'a/b')."""
    return InvalidInputError(
        f"{kind} key {key!r} collides with {kind} key {other!r}: a key cannot also be a "
        "directory of other keys ('a' and 'a/b' cannot both exist)",
        hint=f"rename one of them, e.g. {other.replace('/', '_')!r}",
    )


def validate_run_id(run_id: str) -> str:
    """Raise InvalidInputError unless `run_id` looks like a run id (no path tricks)."""
    if not isinstance(run_id, str) or not _RUN_ID_RE.fullmatch(run_id):
        raise InvalidInputError(
            f"invalid run id {run_id!r}", hint="a run id is 32 hex characters, e.g. from `mlkit runs list`"
        )
    return run_id


def validate_experiment_id(experiment_id: str) -> str:
    """Raise InvalidInputError unless `experiment_id` is a valid experiment id."""
    experiment_id = str(experiment_id)
    if not _EXPERIMENT_ID_RE.fullmatch(experiment_id):
        raise InvalidInputError(
            f"invalid experiment id {experiment_id!r}",
            hint="experiment ids are digits, e.g. '0'; see `mlkit experiments list`",
        )
    return experiment_id


def validate_experiment_name(name: str) -> str:
    """Raise InvalidInputError unless `name` is a usable experiment name."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError(
            f"invalid experiment name {name!r}: it must be a non-empty string",
            hint="give a name, e.g. 'cnn-sweep'",
        )
    if len(name) > MAX_EXPERIMENT_NAME_LENGTH:
        raise InvalidInputError(
            f"experiment name is {len(name)} characters, more than {MAX_EXPERIMENT_NAME_LENGTH}",
            hint="use a shorter name",
        )
    return name


def validate_artifact_path(path: str | None) -> str:
    """Return a normalised relative artifact path; raise if it could leave the artifact dir."""
    if path is None or path == "":
        return ""
    if not isinstance(path, str) or "\x00" in path or "\\" in path:
        raise InvalidInputError(
            f"invalid artifact path {path!r}: NUL bytes and backslashes are not allowed",
            hint="use a relative path with '/' separators, e.g. 'plots/loss.png'",
        )
    norm = posixpath.normpath(path)
    parts = norm.split("/")
    if path.startswith("/") or norm.startswith("/") or ".." in parts or norm == ".":
        raise InvalidInputError(
            f"invalid artifact path {path!r}: it must stay inside the run's artifact directory",
            hint="use a relative path without '..' or a leading '/', e.g. 'plots/loss.png'",
        )
    return norm


def param_value(value: object) -> str:
    """The stored text of a param value: str(), truncated to 6000 chars as MLflow does."""
    text = str(value)
    if len(text) > MAX_PARAM_VALUE_LENGTH:
        text = text[:MAX_PARAM_VALUE_LENGTH]
    return text
