"""The model registry's input rules (MLflow's, plus mlkit's own): model names, stages, aliases,
version numbers and registry tags. Run keys and paths: mlkit.tracking.validation."""

from __future__ import annotations

import os
import re
from typing import Any

from mlkit.errors import InvalidInputError
from mlkit.tracking.registry_entities import STAGES
from mlkit.tracking.validation import validate_key, validate_keys

MAX_TAG_VALUE_LENGTH = 100_000
MAX_ALIAS_LENGTH = 255
MAX_NAME_LENGTH = 250
_ALIAS_RE = re.compile(r"^[\w\-]*$")
_VERSION_ALIAS_RE = re.compile(r"^[vV]\d+$")


def validate_model_name(name: str) -> str:
    """MLflow's rules for registered model names, plus no NUL and no leading '.' (mlkit's lock files)."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError(
            f"invalid model name {name!r}: it must be a non-empty string", hint="e.g. 'cnn-classifier'"
        )
    bad = [c for c in ("/", ":", "%", "\\", "\x00", os.sep) if c in name]
    if bad:
        raise InvalidInputError(
            f"invalid model name {name!r}: names cannot contain {bad[0]!r} ('/', ':', '%', '\\' and NUL are not allowed)",
            hint="use letters, digits, '-', '_', '.' or spaces, e.g. 'cnn-classifier'",
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidInputError(
            f"invalid model name {name!r}: names cannot contain control characters (newline, tab, ...)",
            hint="e.g. 'cnn-classifier'",
        )
    if name.startswith(".") or name != name.strip():
        raise InvalidInputError(
            f"invalid model name {name!r}: names cannot start with '.' or start/end with spaces",
            hint="e.g. 'cnn-classifier'",
        )
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidInputError(
            f"model name is {len(name)} characters, more than {MAX_NAME_LENGTH}", hint="use a shorter name"
        )
    return name


def canonical_stage(stage: str) -> str:
    """'production' -> 'Production'; InvalidInputError for anything that is not a stage."""
    for candidate in STAGES:
        if isinstance(stage, str) and stage.strip().lower() == candidate.lower():
            return candidate
    raise InvalidInputError(
        f"invalid stage {stage!r}: expected one of {', '.join(STAGES)}",
        hint="stages are case-insensitive, e.g. 'production'",
    )


def is_stage(text: str) -> bool:
    """True when `text` names a stage (any case)."""
    return isinstance(text, str) and text.strip().lower() in {s.lower() for s in STAGES}


def validate_alias(alias: str, *, reserved_ok: bool = False) -> str:
    """MLflow's alias rules: [\\w-]+, at most 255 characters, 'latest' and 'v<digits>' reserved."""
    if not isinstance(alias, str) or not alias:
        raise InvalidInputError("alias name cannot be empty", hint="e.g. 'champion'")
    if not _ALIAS_RE.fullmatch(alias):
        raise InvalidInputError(
            f"invalid alias {alias!r}: aliases may only contain letters, digits, '_' and '-'",
            hint="e.g. 'champion' or 'challenger-2'",
        )
    if len(alias) > MAX_ALIAS_LENGTH:
        raise InvalidInputError(
            f"alias is {len(alias)} characters, more than {MAX_ALIAS_LENGTH}", hint="use a shorter alias"
        )
    if not reserved_ok and (alias.lower() == "latest" or _VERSION_ALIAS_RE.fullmatch(alias)):
        raise InvalidInputError(
            f"alias {alias!r} is reserved ('latest' and 'v<number>' name versions already)",
            hint="pick another alias, e.g. 'champion'",
        )
    return alias


def validate_version(version: int | str) -> int:
    """A version number as an int; InvalidInputError for anything else, including what `int()`
    would also take: other scripts' digits ('١'), '1_0', a sign."""
    text = str(version).strip()
    number = int(text) if text.isascii() and text.isdigit() else 0
    if number < 1 or isinstance(version, bool):
        raise InvalidInputError(
            f"invalid model version {version!r}: versions are whole numbers from 1",
            hint="see the versions with `mlkit models show NAME`",
        )
    return number


def validate_tags(tags: dict[Any, Any] | None) -> dict[str, str]:
    """Several tags, checked before any is written: each as `validate_tag`, and no key a
    directory of another ('a' and 'a/b' cannot both be files: the second write would fail after
    the first, leaving a model or version half made)."""
    checked = {str(k): validate_tag(str(k), v) for k, v in (tags or {}).items()}
    validate_keys(list(checked), "tag")
    return checked


def validate_tag(key: str, value: Any) -> str:
    validate_key(key, "tag")
    text = "" if value is None else str(value)
    if len(text) > MAX_TAG_VALUE_LENGTH:
        raise InvalidInputError(
            f"value of registry tag {key!r} is {len(text)} characters, more than {MAX_TAG_VALUE_LENGTH}",
            hint="store large values as a run artifact and tag its path",
        )
    return text
