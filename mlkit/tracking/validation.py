"""Key, value and path checks, as MLflow's FileStore does them (mlflow-compat.md 4.7)."""

from __future__ import annotations

import posixpath
import re

from mlkit.errors import InvalidInputError

MAX_KEY_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000
MAX_EXPERIMENT_NAME_LENGTH = 500

_KEY_RE = re.compile(r"^[/\w.\- :]*$")
_RUN_ID_RE = re.compile(r"^[a-zA-Z0-9][\w\-]{0,255}$")
_EXPERIMENT_ID_RE = re.compile(r"^[a-zA-Z0-9][\w\-]{0,63}$")

_KNOWN_KEYS: set[tuple[str, str]] = set()  # (kind, key) already validated: log_metric is hot


def validate_key(key: str, kind: str = "metric") -> str:
    """Raise InvalidInputError unless `key` is a safe metric/param/tag name; return it."""
    if (kind, key) in _KNOWN_KEYS:
        return key
    if not isinstance(key, str):
        raise InvalidInputError(
            f"{kind} key {key!r} is not a string", hint="pass the key as a str, e.g. 'loss'"
        )
    if not _KEY_RE.match(key):
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
    if len(_KNOWN_KEYS) < 100_000:
        _KNOWN_KEYS.add((kind, key))
    return key


def validate_run_id(run_id: str) -> str:
    """Raise InvalidInputError unless `run_id` looks like a run id (no path tricks)."""
    if not isinstance(run_id, str) or not _RUN_ID_RE.match(run_id):
        raise InvalidInputError(
            f"invalid run id {run_id!r}", hint="a run id is 32 hex characters, e.g. from `mlkit runs list`"
        )
    return run_id


def validate_experiment_id(experiment_id: str) -> str:
    """Raise InvalidInputError unless `experiment_id` is a valid experiment id."""
    experiment_id = str(experiment_id)
    if not _EXPERIMENT_ID_RE.match(experiment_id):
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
