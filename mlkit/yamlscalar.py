"""PyYAML's typing of plain scalars, without importing PyYAML (its import costs ~20 ms).

`resolve(text)` is the tag `yaml.resolver.Resolver` gives a plain (unquoted) scalar: the same YAML
1.1 implicit resolvers (PyYAML's expressions, copied verbatim), tried in PyYAML's order and chosen
by the first character as PyYAML does. So `yes` is a bool, `1e3` a str, `0o17` a str, `012` an int.

`plain_value(text)` is what `yaml.SafeLoader` builds from it (str, int, float, bool or None, with
SafeConstructor's arithmetic), or `NOT_HANDLED` for a timestamp, `<<`, `=`, or a text
SafeConstructor fails on: the caller then leaves the document to PyYAML.
tests/test_yamlfast.py checks both against PyYAML itself.
"""

from __future__ import annotations

import re
from typing import Any

STR = "tag:yaml.org,2002:str"
NOT_HANDLED: Any = object()

# PyYAML's implicit resolvers, verbatim (yaml/resolver.py), compiled when first needed: each
# costs ~0.5 ms to compile, the run path meets few of them, and bool, null, merge, value and yaml
# are matched as the sets of words their expressions spell.
_FLOAT = r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
                    |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
                    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$"""
_INT = r"""^(?:[-+]?0b[0-1_]+
                    |[-+]?0[0-7_]+
                    |[-+]?(?:0|[1-9][0-9_]*)
                    |[-+]?0x[0-9a-fA-F_]+
                    |[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$"""
_TIMESTAMP = r"""^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]
                    |[0-9][0-9][0-9][0-9] -[0-9][0-9]? -[0-9][0-9]?
                     (?:[Tt]|[ \t]+)[0-9][0-9]?
                     :[0-9][0-9] :[0-9][0-9] (?:\.[0-9]*)?
                     (?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$"""
_WORDS = {
    "bool": frozenset("yes Yes YES no No NO true True TRUE false False FALSE on On ON off Off OFF".split()),
    "merge": frozenset(["<<"]),
    "null": frozenset(["~", "null", "Null", "NULL", ""]),
    "value": frozenset(["="]),
    "yaml": frozenset(["!", "&", "*"]),
}
_TAG = "tag:yaml.org,2002:"
# PyYAML's table: first character -> its resolvers in registration order (bool, float, int, merge,
# null, timestamp, value, yaml).
_BY_FIRST: dict[str, list[str]] = {}
for _tag, _first in (
    ("bool", "yYnNtTfFoO"),
    ("float", "-+0123456789."),
    ("int", "-+0123456789"),
    ("merge", "<"),
    ("null", ["~", "n", "N", ""]),
    ("timestamp", "0123456789"),
    ("value", "="),
    ("yaml", "!&*"),
):
    for _ch in _first:
        _BY_FIRST.setdefault(_ch, []).append(_tag)
_COMPILED: dict[str, re.Pattern[str]] = {}
# Without a `.` or `0x`, float, int and timestamp match only texts made of these.
_NUMERIC = frozenset("0123456789_:+-bTtZ \t\n")

_BOOL_VALUES = {"yes": True, "no": False, "true": True, "false": False, "on": True, "off": False}
_INF = 1e300
while _INF != _INF * _INF:
    _INF *= _INF
_NAN = -_INF / _INF  # SafeConstructor's NaN, made the same way


def resolve(text: str) -> str:
    """The tag PyYAML's resolver gives `text` as a plain scalar."""
    for tag in _BY_FIRST.get(text[:1], ()):
        if _matches(tag, text):
            return _TAG + tag
    return STR


def _matches(tag: str, text: str) -> bool:
    words = _WORDS.get(tag)
    if words is not None:  # `^(?:...)$`: `$` also matches before a last newline
        return (text[:-1] if text.endswith("\n") else text) in words
    if "." not in text and "0x" not in text and not _NUMERIC.issuperset(text):
        return False  # a run id such as 5a49ace2...: no numeric expression can match it
    if tag == "int" and text.isascii() and text.isdigit():  # the int expression on plain digits
        return text[0] != "0" or len(text) == 1 or not ("8" in text or "9" in text)
    regexp = _COMPILED.get(tag)
    if regexp is None:
        regexp = _COMPILED[tag] = re.compile(
            {"float": _FLOAT, "int": _INT, "timestamp": _TIMESTAMP}[tag], re.X
        )
    return regexp.match(text) is not None


def plain_value(text: str) -> Any:
    """What PyYAML's safe loader builds from the plain scalar `text`, or NOT_HANDLED."""
    tag = resolve(text)
    try:
        if tag == STR:
            return text
        if tag == _TAG + "null":
            return None
        if tag == _TAG + "bool":
            return _BOOL_VALUES[text.lower()]
        if tag == _TAG + "int":
            return _int(text)
        if tag == _TAG + "float":
            return _float(text)
    except (ValueError, KeyError, IndexError):  # SafeConstructor fails too: let PyYAML say how
        return NOT_HANDLED
    return NOT_HANDLED  # timestamp, merge, value, yaml: rare, and PyYAML's own objects or errors


def _int(text: str) -> int:
    # SafeConstructor.construct_yaml_int, step by step
    value = text.replace("_", "")
    sign = -1 if value[0] == "-" else 1
    if value[0] in "+-":
        value = value[1:]
    if value == "0":
        return 0
    if value.startswith("0b"):
        return sign * int(value[2:], 2)
    if value.startswith("0x"):
        return sign * int(value[2:], 16)
    if value[0] == "0":
        return sign * int(value, 8)
    if ":" in value:
        return sign * _base60(value, int)
    return sign * int(value)


def _float(text: str) -> float:
    # SafeConstructor.construct_yaml_float, step by step
    value = text.replace("_", "").lower()
    sign = -1 if value[0] == "-" else 1
    if value[0] in "+-":
        value = value[1:]
    if value == ".inf":
        return sign * _INF
    if value == ".nan":
        return _NAN
    if ":" in value:
        return sign * _base60(value, float)
    return sign * float(value)


def _base60(value: str, number: type[int] | type[float]) -> Any:
    """YAML 1.1's sexagesimal numbers (`1:30` is 90), as SafeConstructor sums them."""
    total, base = number(0), 1
    for digit in reversed([number(part) for part in value.split(":")]):
        total += digit * base
        base *= 60
    return total
