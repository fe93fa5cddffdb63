r"""PyYAML's results for the simple YAML that `mlkit run` reads and writes, without importing PyYAML.

`load(text)` reads the block-YAML subset real MLproject, conda.yaml and python_env.yaml files use:
block mappings and sequences (indentless ones and `- key: value` included); plain, single- and
double-quoted scalars (escapes: only `\\`, `\"`, `\n`, `\t`), on one line or folded over
several; `>` and `|` block scalars of evenly indented lines; one-line flow collections, nested or
not (`[python=3.11, pip]`, `{type: float, default: 0.1}`); comments and blank lines. It returns
exactly what `yaml.safe_load` returns, or None when it is not sure: an anchor, an alias, a tag, a
tab, a `---`, a duplicate key, a key that is not a plain string, non-ASCII text, a blank line
inside a scalar, a top level that is not a collection... Then the caller's PyYAML path runs,
unchanged, and says what is wrong with a bad file. What it returns keeps yamlsafe's promises:
nesting is at most `MAX_DEPTH` deep, there are no aliases, and every key is a string.

`dump_flat(data)` is `yaml.dump(data, Dumper=CSafeDumper, default_flow_style=False,
allow_unicode=True, sort_keys=True)` byte for byte for a flat mapping of plain strings, ints, bools,
None and empty lists or mappings (a store's meta.yaml), or None for anything else.

tests/test_yamlfast.py compares both with PyYAML itself on every MLproject and conda.yaml of the
tests and on thousands of generated scalars, documents and mappings.
"""

from __future__ import annotations

import re
from typing import Any

from mlkit.yamlscalar import NOT_HANDLED, STR, plain_value, resolve

MAX_DEPTH = 32  # below yamlsafe's 64: a deeper document is left to PyYAML and its checks
_MAX_KEY = 100  # PyYAML writes a key of 128 characters or more as `? key`

# Character sets rather than expressions where they do (each expression costs its compile at import).
_TEXT = frozenset("\n" + "".join(map(chr, range(0x20, 0x7F))))  # no tab, CR, control, non-ASCII
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_KEY_FIRST = frozenset(_ALNUM + "_")  # a plain key, before it is resolved
_KEY_REST = frozenset(_ALNUM + "_.-/")
# What a plain scalar inside a flow collection may hold here: no indicator, no `:` or `#`.
_FLOW_PLAIN = re.compile(r"[A-Za-z0-9_./~+\-][A-Za-z0-9 _./~+\-=<>()^$;]*")
# A plain scalar in block context may not start with these (`-`: only before a space).
_BLOCK_START = frozenset("?:,[]{}#&*!|>'\"%@`")


class _Unsure(Exception):
    """Not in the subset: the caller returns None and PyYAML reads the text."""


def load(text: str) -> Any:
    """`yaml.safe_load(text)` for the subset above (a mapping or a list), else None."""
    try:
        return read(text)
    except _Unsure:
        return None
    except Exception:  # a slip here must not cost the user a good file: PyYAML reads it
        return None


def read(text: str) -> Any:
    """`load` without its safety net: raises `_Unsure` where it declines (and any slip; for tests)."""
    if not _TEXT.issuperset(text):
        raise _Unsure
    raw_lines = text.split("\n")
    lines: list[tuple[int, str, int]] = []  # (indent, content, index in raw_lines) of each line
    for number, raw in enumerate(raw_lines):  # that is neither blank nor a comment
        content = raw.lstrip(" ")
        if not content or content[0] == "#":
            continue
        lines.append((len(raw) - len(content), content.rstrip(" "), number))
    if not lines or lines[0][0] != 0:
        raise _Unsure
    value, end = _Reader(lines, raw_lines).block(0, 0, 1)
    if end != len(lines):
        raise _Unsure
    return value


class _Reader:
    def __init__(self, lines: list[tuple[int, str, int]], raw_lines: list[str]):
        self.lines = lines
        self.raw_lines = raw_lines

    def block(self, i: int, indent: int, depth: int) -> tuple[Any, int]:
        """The block collection whose first line is `i`, at `indent`; and the line after it."""
        if depth > MAX_DEPTH:
            raise _Unsure
        if _is_entry(self.lines[i][1]):
            return self.sequence(i, indent, depth)
        return self.mapping(i, indent, depth)

    def mapping(self, i: int, indent: int, depth: int) -> tuple[dict[str, Any], int]:
        out: dict[str, Any] = {}
        lines = self.lines
        while i < len(lines):
            at, content, _ = lines[i]
            if at < indent:
                break
            if at > indent:
                raise _Unsure
            if _is_entry(content):
                break  # a `- x` where a key was due: the caller's business (or PyYAML's error)
            split = _split_key(content)
            if split is None:
                raise _Unsure
            key, rest = split
            if key in out:
                raise _Unsure  # PyYAML keeps the last one silently; leave that to it
            if rest in _BLOCK_HEADERS:
                out[key], i = self.block_scalar(i, indent, rest)
            elif rest and (
                (rest[0] in "'\"" and _quote_end(rest, 0) is None)
                or (rest[0] not in "'\"[{" and i + 1 < len(lines) and lines[i + 1][0] > indent)
            ):
                out[key], i = self.scalar_lines(i, indent, rest, depth + 1)
                if i < len(lines) and lines[i][0] > indent:
                    raise _Unsure
            elif rest:
                out[key] = _inline(rest, depth + 1)
                i += 1
                if i < len(lines) and lines[i][0] > indent:
                    raise _Unsure  # a multi-line scalar, or an error
            elif i + 1 < len(lines) and lines[i + 1][0] > indent:
                out[key], i = self.block(i + 1, lines[i + 1][0], depth + 1)
            elif i + 1 < len(lines) and lines[i + 1][0] == indent and _is_entry(lines[i + 1][1]):
                out[key], i = self.sequence(i + 1, indent, depth + 1)  # an indentless sequence
            else:
                out[key] = None
                i += 1
        return out, i

    def sequence(self, i: int, indent: int, depth: int) -> tuple[list[Any], int]:
        out: list[Any] = []
        lines = self.lines
        while i < len(lines):
            at, content, _ = lines[i]
            if at > indent:
                raise _Unsure
            if at < indent or not _is_entry(content):
                break
            rest = content[1:].lstrip(" ")
            if not rest or rest[0] == "#":
                if i + 1 < len(lines) and lines[i + 1][0] > indent:
                    item, i = self.block(i + 1, lines[i + 1][0], depth + 1)
                else:
                    item, i = None, i + 1
            elif _is_entry(rest):
                raise _Unsure  # `- - x`
            elif _split_key(rest) is not None:  # `- key: value`: a mapping at the key's column
                column = indent + len(content) - len(rest)
                self.lines[i] = (column, rest, lines[i][2])
                item, i = self.mapping(i, column, depth + 1)
            else:
                item = _inline(rest, depth + 1)
                i += 1
                if i < len(lines) and lines[i][0] > indent:
                    raise _Unsure
            out.append(item)
        return out, i

    def block_scalar(self, i: int, indent: int, header: str) -> tuple[str, int]:
        """The `>`, `>-`, `|` or `|-` scalar of the key on line `i`, and the line after it: only
        its simplest form, lines at one indentation with no blank line, no trailing space."""
        raw_lines = self.raw_lines
        first = self.lines[i][2] + 1
        if first >= len(raw_lines):
            raise _Unsure
        column = len(raw_lines[first]) - len(raw_lines[first].lstrip(" "))
        if column <= indent or column == len(raw_lines[first]):
            raise _Unsure  # empty, or a blank line first (it may set the indentation)
        body: list[str] = []
        end = first
        while end < len(raw_lines):
            line = raw_lines[end]
            content = line.lstrip(" ")
            at = len(line) - len(content)
            if not content or at < column:
                break
            if at > column or content != content.rstrip(" "):
                raise _Unsure  # a more indented line is kept apart, and trailing spaces matter
            body.append(content)
            end += 1
        rest = end
        while rest < len(raw_lines) and not raw_lines[rest].strip(" "):
            if len(raw_lines[rest]) >= column:
                raise _Unsure  # a line of spaces as deep as the text: its spaces are text
            rest += 1
        if rest < len(raw_lines) and len(raw_lines[rest]) - len(raw_lines[rest].lstrip(" ")) >= column:
            raise _Unsure  # more of the scalar after a blank line
        if rest == len(raw_lines) and any(raw_lines[end:]):
            raise _Unsure  # spaces on the last line, without a line break: PyYAML keeps them
        value = (" " if header[0] == ">" else "\n").join(body)
        if not header.endswith("-") and end < len(raw_lines):  # clip: the last line's break stays
            value += "\n"
        while i < len(self.lines) and self.lines[i][2] < end:
            i += 1
        return value, i

    def scalar_lines(self, i: int, indent: int, rest: str, depth: int) -> tuple[Any, int]:
        """The quoted or plain scalar of the key on line `i` that goes on over the next lines (each
        line break folds into a space), and the line after it: only when every line of it is more
        indented than the key and none is blank (a blank line may end a plain one)."""
        raw_lines = self.raw_lines
        quote = rest[0] if rest[0] in "'\"" else ""
        pieces = [rest[1:] if quote else rest]
        if not quote and " #" in rest:
            raise _Unsure  # a comment ends the scalar: what follows is an error
        end = self.lines[i][2] + 1
        while end < len(raw_lines):
            line = raw_lines[end]
            content = line.strip(" ")
            if not content or len(line) - len(line.lstrip(" ")) <= indent:
                if quote:
                    raise _Unsure
                after = end
                while after < len(raw_lines) and not raw_lines[after].strip(" "):
                    after += 1
                if (
                    after < len(raw_lines)
                    and len(raw_lines[after]) - len(raw_lines[after].lstrip(" ")) > indent
                ):
                    raise _Unsure  # a blank line inside: a line break of its own
                break
            end += 1
            if not quote:
                if content[0] in _BLOCK_START or _is_entry(content) or " #" in content:
                    raise _Unsure
                pieces.append(content)
                continue
            close = _quote_end(quote + content, 0)
            if close is None:
                pieces.append(content)
                continue
            if not _after(content[close:]):
                raise _Unsure
            pieces.append(content[: close - 1])
            break
        else:
            if quote:
                raise _Unsure  # the file ends inside the quotes
        if quote == '"' and any(piece.endswith("\\") for piece in pieces):
            raise _Unsure  # an escaped line break
        joined = " ".join(pieces)
        value = _quoted(quote + joined + quote) if quote else _inline(joined, depth)
        if value is None:
            raise _Unsure
        while i < len(self.lines) and self.lines[i][2] < end:
            i += 1
        return value, i


_BLOCK_HEADERS = (">", ">-", "|", "|-")


def _is_entry(content: str) -> bool:
    return content == "-" or content.startswith("- ")


def _split_key(content: str) -> tuple[str, str] | None:
    """(key, the value text after `: `) for a `key: ...` line, else None (not a key, or unsure)."""
    if content[0] in "'\"":
        end = _quote_end(content, 0)
        if end is None or content[end + 1 : end + 2] != ":" or content[end + 2 : end + 3] not in ("", " "):
            return None
        key = _quoted(content[: end + 1])
        end += 1  # the colon
    else:
        colon = content.find(":")
        if colon < 1 or content[colon + 1 : colon + 2] not in ("", " "):
            return None
        key = content[:colon]
        if key[0] not in _KEY_FIRST or not _KEY_REST.issuperset(key) or resolve(key) != STR:
            return None
        end = colon
    if key is None or len(key) >= _MAX_KEY:
        return None
    rest = content[end + 1 :].lstrip(" ")
    return key, ("" if rest.startswith("#") else rest)


def _quote_end(text: str, start: int) -> int | None:
    """The index of the quote that closes the scalar opened at `start` on this line, or None."""
    quote = text[start]
    i = start + 1
    while True:
        i = text.find(quote, i)
        if i < 0:
            return None
        if quote == "'" and text[i + 1 : i + 2] == "'":
            i += 2  # '' is a quote inside single quotes
            continue
        if quote == '"' and (i - start - 1 - len(text[start + 1 : i].rstrip("\\"))) % 2:
            i += 1  # an escaped quote: \"
            continue
        return i


# The escapes of double-quoted scalars read here; any other (\x41, \u00e9, \N, \ and a line
# break...) is left to PyYAML.
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t"}


def _quoted(token: str) -> str | None:
    """The value of a whole one-line quoted scalar, or None where unsure (an unusual escape)."""
    inner = token[1:-1]
    if token[0] == "'":
        return inner.replace("''", "'")
    if "\\" not in inner:
        return inner
    parts = inner.split("\\")
    out = [parts[0]]
    i = 1
    while i < len(parts):
        part = parts[i]
        if part == "":  # `\\`: a backslash, and the next part is plain text
            if i + 1 >= len(parts):
                return None
            out.append("\\" + parts[i + 1])
            i += 2
            continue
        escaped = _ESCAPES.get(part[0])
        if escaped is None:
            return None
        out.append(escaped + part[1:])
        i += 1
    return "".join(out)


def _after(text: str) -> bool:
    """Whether `text`, after a scalar or collection, is only spaces and perhaps a comment."""
    rest = text.lstrip(" ")
    return not rest or (rest[0] == "#" and len(rest) < len(text))


def _inline(text: str, depth: int) -> Any:
    """A value on the rest of a line: a flow collection, a quoted or a plain scalar."""
    first = text[0]
    if first in "[{":
        if depth > MAX_DEPTH:
            raise _Unsure
        value, end = _flow(text, depth)
        if not _after(text[end:]):
            raise _Unsure
        return value
    if first in "'\"":
        close = _quote_end(text, 0)
        if close is None or not _after(text[close + 1 :]):
            raise _Unsure
        value = _quoted(text[: close + 1])
        if value is None:
            raise _Unsure
        return value
    comment = text.find(" #")
    if comment >= 0:
        text = text[:comment].rstrip(" ")
    if first in _BLOCK_START or (first == "-" and text[1:2] in ("", " ")):
        raise _Unsure
    if ": " in text or text.endswith(":") or text.startswith(("---", "...")):
        raise _Unsure
    value = plain_value(text)
    if value is NOT_HANDLED:
        raise _Unsure
    return value


def _flow(text: str, depth: int) -> tuple[Any, int]:
    """A one-line flow sequence or mapping at the start of `text`, and where it ends."""
    is_map = text[0] == "{"
    close = "}" if is_map else "]"
    items: list[Any] = []
    mapping: dict[str, Any] = {}
    i = _skip(text, 1)
    if text[i : i + 1] == close:
        return ({} if is_map else []), i + 1
    while True:
        if is_map:
            key, i, quoted = _flow_scalar(text, i, MAX_DEPTH + 1)  # a collection as a key: unsure
            if not isinstance(key, str) or key in mapping or len(key) >= _MAX_KEY:
                raise _Unsure
            if not quoted and resolve(key) != STR:
                raise _Unsure
            if text[i : i + 2] != ": ":
                raise _Unsure
            value, i, _ = _flow_scalar(text, _skip(text, i + 2), depth)
            mapping[key] = value
        else:
            value, i, _ = _flow_scalar(text, i, depth)
            items.append(value)
        i = _skip(text, i)
        if text[i : i + 1] == close:
            return (mapping if is_map else items), i + 1
        if text[i : i + 1] != ",":
            raise _Unsure
        i = _skip(text, i + 1)


def _skip(text: str, i: int) -> int:
    while text[i : i + 1] == " ":
        i += 1
    return i


def _flow_scalar(text: str, i: int, depth: int) -> tuple[Any, int, bool]:
    """(value, end, not plain) of the scalar or collection at `i` inside a flow collection."""
    if text[i : i + 1] in ("[", "{"):
        if depth > MAX_DEPTH:
            raise _Unsure
        value, end = _flow(text[i:], depth + 1)
        return value, i + end, True
    if text[i : i + 1] in ("'", '"'):
        close = _quote_end(text, i)
        if close is None:
            raise _Unsure
        value = _quoted(text[i : close + 1])
        if value is None:
            raise _Unsure
        return value, close + 1, True
    match = _FLOW_PLAIN.match(text, i)
    if match is None:
        raise _Unsure
    raw = match.group().rstrip(" ")
    if raw[0] in "-+" and raw[1:2] in ("", " "):
        raise _Unsure
    value = plain_value(raw)
    if value is NOT_HANDLED:
        raise _Unsure
    return value, i + len(raw), False


# --- the emitter ---------------------------------------------------------------------------------

_PLAIN_FIRST = frozenset(_ALNUM + "_./~+=(-")  # before the finer checks
_PLAIN_REST = frozenset(_ALNUM + " _./~+=()%@,:-")
_WIDTH = 70  # PyYAML folds a line past 80 columns at a space: leave anything near that to it


def dump_flat(data: dict[str, Any]) -> str | None:
    """PyYAML's dump of a flat mapping (see the module docstring), or None to let PyYAML do it."""
    if not data:
        return None
    out = []
    for key in sorted(data):
        if not isinstance(key, str) or len(key) >= _MAX_KEY or _scalar_style(key) != "plain":
            return None
        value = data[key]
        if value is None:
            text = "null"
        elif value is True or value is False:
            text = "true" if value else "false"
        elif type(value) is int:
            text = str(value)
        elif type(value) in (list, dict) and not value:
            text = "[]" if type(value) is list else "{}"
        elif type(value) is str:
            style = _scalar_style(value)
            if style is None or (" " in value and len(key) + len(value) + 4 > _WIDTH):
                return None
            text = value if style == "plain" else f"'{value}'"
        else:
            return None
        out.append(f"{key}: {text}\n")
    return "".join(out)


def _scalar_style(text: str) -> str | None:
    """'plain' or 'quoted' (single quotes) as PyYAML writes `text` in block context; None: unsure."""
    if text == "":
        return "quoted"
    if text[0] not in _PLAIN_FIRST or not _PLAIN_REST.issuperset(text) or text[-1] in " :" or ": " in text:
        return None
    if text[0] == "-" and text[1:2] in ("", " "):
        return None
    if text.startswith(("---", "...")):
        return None
    return "plain" if resolve(text) == STR else "quoted"
