"""Durations and byte sizes, one home for all: parsed from the command line, formatted for people.

Used by mlkit.gpu (memory filters), mlkit.tracking (ages, durations) and the CLI.

`parse_memory("20GiB") -> 21474836480` and `parse_duration("2h") -> 7200.0`. Bad input raises
`UsageError` naming the flag, so the CLI can pass the value through without checking it first.
"""

from __future__ import annotations

import math
import re

from mlkit.errors import UsageError

# Binary units for the bare letters (as docker's `--memory 1g` and nvidia-smi's MiB);
# "GB"/"MB" are decimal, as on a disk label.
_MEMORY_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": 1024**2,
    "mib": 1024**2,
    "mb": 1000**2,
    "g": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
    "t": 1024**4,
    "tib": 1024**4,
    "tb": 1000**4,
}
_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*$")

_DURATION_UNITS = {
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)")


def parse_memory(value: str | int, *, flag: str = "--min-free-memory") -> int:
    """Bytes from "20GiB", "20G" (binary), "20GB" (decimal), "512MiB" or a plain byte count."""
    if isinstance(value, int):
        if value < 0:
            raise UsageError(f"{flag} {value}: a size cannot be negative", hint="e.g. 20GiB or 512MiB")
        return value
    match = _MEMORY_RE.match(str(value))
    unit = match.group(2).lower() if match else None
    if not match or unit not in _MEMORY_UNITS:
        raise UsageError(
            f"{flag} {value!r}: not a size",
            hint="give a number with a unit: 20GiB, 20G (binary), 20GB (decimal), 512MiB, or bytes",
        )
    return int(float(match.group(1)) * _MEMORY_UNITS[unit])


def parse_duration(value: str | float | int, *, flag: str = "--wait") -> float:
    """Seconds from "2h", "30m", "1h30m", "45s", "1.5h", "90" (seconds), or "inf"/"forever"."""
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        if text in ("inf", "infinity", "forever"):
            return math.inf
        seconds = _parse_duration_text(text, flag)
    if seconds < 0 or math.isnan(seconds):
        raise UsageError(f"{flag} {value!r}: a duration cannot be negative", hint="e.g. 30m, 2h or 90s")
    return seconds


def _parse_duration_text(text: str, flag: str) -> float:
    bad = UsageError(
        f"{flag} {text!r}: not a duration",
        hint="give seconds or a number with a unit: 90, 45s, 30m, 2h, 1h30m, 1d, 2w, or 'inf'",
    )
    if not text:
        raise bad
    parts = list(_DURATION_PART.finditer(text))
    total, pos = 0.0, 0
    for match in parts:
        if match.start() != pos and text[pos : match.start()].strip():
            raise bad
        if not match.group(2) and len(parts) > 1:  # `1.5.5h`, `1 2h`: a bare number is the whole value
            raise bad
        unit = match.group(2) or "s"
        if unit not in _DURATION_UNITS:
            raise bad
        total += float(match.group(1)) * _DURATION_UNITS[unit]
        pos = match.end()
    if pos == 0 or text[pos:].strip():
        raise bad
    return total


def parse_age(value: str, *, flag: str = "--older-than") -> float:
    """Seconds for a retention age: a duration with a unit (30d, 12h, 1d12h, 2w), or "0" for any age.

    Unlike --wait, a bare number is refused: `--older-than 30` must not quietly mean 30 seconds.
    """
    text = str(value).strip().lower()
    if text in ("0", "0s"):
        return 0.0
    bad = UsageError(
        f"{flag} {value!r}: not an age (not a duration with a unit)",
        hint="write numbers with units w, d, h, m, s, e.g. 30d, 1d12h, 90m",
    )
    if not text or text[-1].isdigit() or text in ("inf", "infinity", "forever"):
        raise bad
    try:
        return parse_duration(text, flag=flag)
    except UsageError:
        raise bad from None


def format_bytes(n: int | None) -> str:
    """Human MiB/GiB for tables and messages: 3.0 GiB, 512 MiB; "-" for unknown."""
    if n is None:
        return "-"
    if n >= 1024**3:
        return f"{n / 1024**3:.1f} GiB"
    return f"{n / 1024**2:.0f} MiB"


_UNIT_S = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def format_duration(seconds: float) -> str:
    """A short human duration: 45s, 1.5m, 3h, 100d."""
    for unit in ("d", "h", "m"):
        size = _UNIT_S[unit]
        if seconds >= size:
            value = seconds / size
            text = f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"
            return text + unit
    return f"{seconds:.0f}s"
