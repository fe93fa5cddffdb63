"""A fast path for the store's meta.yaml files: one `key: scalar` per line, as `yaml.safe_dump`
writes a run's or experiment's attributes.

`parse_flat(text)` returns exactly what `yaml.safe_load(text)` would, or None when the text is
anything else (nesting, block or flow collections other than `[]`/`{}`, double quotes, comments,
anchors, a timestamp...), and the caller then parses it with PyYAML. Plain scalars are typed as
PyYAML's own implicit resolver types them (`mlkit.yamlscalar`, which does not import PyYAML), so
`0a1b…` stays a string and `0123` is octal. Reading a cold store's 10,000 meta files this way skips
most of PyYAML's per-node work, and a run never imports PyYAML for it.
"""

from __future__ import annotations

import re
from typing import Any

from mlkit.yamlscalar import NOT_HANDLED, STR, plain_value, resolve

_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*):(?: (.*))?")
_INDICATORS = frozenset("-?:,[]{}#&*!|>'\"%@`")
_BREAKS = ("\r", "\x85", "\u2028", "\u2029", "\t")
_NOT_FLAT = object()
# What PyYAML's reader refuses (its NON_PRINTABLE, less the surrogates: see _readable), and a
# byte-order mark (dropped at the start): all left to PyYAML.
_UNREADABLE = frozenset(
    [chr(c) for c in range(0x20) if chr(c) not in "\t\n\r"]
    + [chr(c) for c in range(0x7F, 0xA0) if c != 0x85]
    + ["\ufeff", "\ufffe", "\uffff"]
)


def parse_flat(text: str) -> dict[str, Any] | None:
    """The mapping in `text` when it is flat and simple (see the module docstring), else None."""
    if not _readable(text):
        return None
    out: dict[str, Any] = {}
    for line in text.split("\n"):
        if not line:
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            return None
        key, raw = match.groups()
        value = None if raw is None else _scalar(raw)
        if value is _NOT_FLAT or key in out or resolve(key) != STR:  # `true:` is a bool key
            return None
        out[key] = value
    return out or None


def _readable(text: str) -> bool:
    if not _UNREADABLE.isdisjoint(text):
        return False
    try:
        text.encode("utf-8")  # a lone surrogate cannot be
    except UnicodeEncodeError:
        return False
    return True


def _scalar(raw: str) -> Any:
    if any(brk in raw for brk in _BREAKS):  # YAML folds these inside quoted and plain scalars
        return _NOT_FLAT
    if raw == "[]":
        return []
    if raw == "{}":
        return {}
    if raw.startswith("'"):
        inner = raw[1:-1]
        if len(raw) < 2 or not raw.endswith("'") or "'" in inner.replace("''", ""):
            return _NOT_FLAT
        return inner.replace("''", "'")
    if not raw or raw[0] in _INDICATORS or raw != raw.strip():
        return _NOT_FLAT
    if " #" in raw or ": " in raw or raw.endswith(":"):
        return _NOT_FLAT
    value = plain_value(raw)
    return _NOT_FLAT if value is NOT_HANDLED else value
