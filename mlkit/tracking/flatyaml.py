"""A fast path for the store's meta.yaml files: one `key: scalar` per line, as `yaml.safe_dump`
writes a run's or experiment's attributes.

`parse_flat(text)` returns exactly what `yaml.safe_load(text)` would, or None when the text is
anything else (nesting, block or flow collections other than `[]`/`{}`, double quotes, comments,
anchors, a float, a bool, a timestamp...), and the caller then parses it with PyYAML. Plain scalars
are typed by PyYAML's own implicit resolver, so `0a1b…` stays a string and `0123` is not taken for
a decimal. Reading a cold store's 10,000 meta files this way skips most of PyYAML's per-node work.
"""

from __future__ import annotations

import re
from typing import Any

_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*):(?: (.*))?")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_INDICATORS = frozenset("-?:,[]{}#&*!|>'\"%@`")
_BREAKS = ("\r", "\x85", "\u2028", "\u2029", "\t")
_NOT_FLAT = object()
_resolver: Any = None


def parse_flat(text: str) -> dict[str, Any] | None:
    """The mapping in `text` when it is flat and simple (see the module docstring), else None."""
    out: dict[str, Any] = {}
    for line in text.split("\n"):
        if not line:
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            return None
        key, raw = match.groups()
        value = None if raw is None else _scalar(raw)
        if value is _NOT_FLAT or key in out:
            return None
        out[key] = value
    return out or None


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
    tag = _resolve(raw)
    if tag == "tag:yaml.org,2002:str":
        return raw
    if tag == "tag:yaml.org,2002:int" and _DECIMAL.fullmatch(raw):
        return int(raw)
    if tag == "tag:yaml.org,2002:null":
        return None
    return _NOT_FLAT


def _resolve(raw: str) -> str:
    """The tag PyYAML's safe loader gives this plain scalar (str, int, float, bool, null, timestamp)."""
    global _resolver
    if _resolver is None:
        import yaml  # lazily: `import mlkit` must not import yaml (tests/test_imports.py)

        _resolver = yaml.resolver.Resolver()
        _resolver.scalar_node = yaml.nodes.ScalarNode
    return _resolver.resolve(_resolver.scalar_node, raw, (True, False))
