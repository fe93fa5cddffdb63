"""MLflow's search_runs filter and order_by grammar: parse once, evaluate on many runs.

    metrics.acc > 0.9 AND params.lr = '0.01' AND tags.`mlflow.user` LIKE 'a%'
    attributes.status IN ('FINISHED', 'FAILED')   -- IN / NOT IN: run_id and status

Only AND joins clauses (as in MLflow). Errors are InvalidInputError naming the bad token and its
position (1-based character offset).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlkit.errors import InvalidInputError

METRIC, PARAM, TAG, ATTRIBUTE = "metric", "param", "tag", "attribute"
_PREFIXES = {
    "metric": METRIC, "metrics": METRIC,
    "param": PARAM, "params": PARAM, "parameter": PARAM, "parameters": PARAM,
    "tag": TAG, "tags": TAG,
    "attribute": ATTRIBUTE, "attributes": ATTRIBUTE, "attr": ATTRIBUTE, "run": ATTRIBUTE,
}  # fmt: skip
STRING_ATTRIBUTES = frozenset({"run_id", "run_name", "status", "user_id", "artifact_uri"})
NUMERIC_ATTRIBUTES = frozenset({"start_time", "end_time"})
_ATTRIBUTE_ALIASES = {"created": "start_time", "Created": "start_time", "run name": "run_name",
                      "Run name": "run_name", "Run Name": "run_name"}  # fmt: skip
ORDERABLE_ATTRIBUTES = frozenset({"artifact_uri", "end_time", "run_id", "run_name", "start_time",
                                  "status", "user_id"})  # fmt: skip
LIST_ATTRIBUTES = frozenset({"run_id", "status"})
MAX_RESULTS_LIMIT = 50000

_NUMERIC_OPS = ("=", "!=", "<", "<=", ">", ">=")
_STRING_OPS = ("=", "!=", "LIKE", "ILIKE")

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.)*")
  | (?P<number>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?![\w.]))
  | (?P<op><=|>=|!=|<>|==|=|<|>)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<comma>,)
  | (?P<ident>(?:[A-Za-z_][\w]*\.)?(?:`[^`]*`|"[^"]*"|[\w][\w.:/-]*))
    """,
    re.VERBOSE,
)
_KEYWORDS = {"AND", "OR", "NOT", "LIKE", "ILIKE", "IN", "IS", "NULL"}


@dataclass(frozen=True)
class Token:
    """One lexical token of a filter string, with its 0-based position."""

    kind: str  # string, number, op, lparen, rparen, comma, ident, keyword
    text: str
    pos: int


@dataclass(frozen=True)
class Clause:
    """One comparison of a filter: entity type, key, comparator and value."""

    type: str
    key: str
    comparator: str
    value: Any


@dataclass
class RunRow:
    """What filter and sort look at: attributes, params, tags and latest metrics of one run."""

    info: dict[str, Any]
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)


def _error(filter_string: str, token: Token | None, what: str) -> InvalidInputError:
    if token is None:
        where = f"at the end (position {len(filter_string) + 1})"
    else:
        where = f"at position {token.pos + 1} ({token.text!r})"
    return InvalidInputError(
        f"invalid filter {filter_string!r}: {what} {where}",
        hint="clauses look like metrics.acc > 0.9, params.lr = '0.01', tags.`a.b` LIKE 'x%', "
        "attributes.status IN ('FINISHED'), joined by AND",
    )


def tokenize(text: str) -> list[Token]:
    """Split a filter string into tokens; InvalidInputError at the first character that fits none."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            bad = Token("error", text[pos : pos + 10], pos)
            raise _error(text, bad, "unexpected character")
        kind = match.lastgroup or ""
        value = match.group()
        if kind == "ident" and value.upper() in _KEYWORDS:
            kind = "keyword"
        if kind != "ws":
            tokens.append(Token(kind, value, pos))
        pos = match.end()
    return tokens


def _unquote_string(text: str) -> str:
    """The text between a string's quotes, as it is: MLflow undoes no `''` or backslash escape (the
    tokenizer still lets `''` and `\\'` stand inside a string; a value with a quote is written
    in the other quotes: "it's")."""
    return text[1:-1]


def _split_identifier(text: str) -> tuple[str | None, str]:
    """'metrics.`a b`' -> ('metrics', 'a b'); 'status' -> (None, 'status')."""
    match = re.match(r"([A-Za-z_]\w*)\.(.+)$", text, re.S)
    if match and match.group(1).lower() in _PREFIXES:
        prefix, key = match.group(1), match.group(2)
    else:
        prefix, key = None, text
    if len(key) >= 2 and key[0] == key[-1] and key[0] in '`"':
        key = key[1:-1]
    return prefix, key


def _resolve_identifier(filter_string: str, token: Token) -> tuple[str, str]:
    prefix, key = _split_identifier(token.text)
    if prefix is None:
        entity = ATTRIBUTE
    else:
        known = _PREFIXES.get(prefix.lower())
        if known is None:
            raise _error(filter_string, token, f"unknown entity type {prefix!r}")
        entity = known
    if entity == ATTRIBUTE:
        key = _ATTRIBUTE_ALIASES.get(key, key)
        if key not in STRING_ATTRIBUTES and key not in NUMERIC_ATTRIBUTES:
            valid = ", ".join(sorted(STRING_ATTRIBUTES | NUMERIC_ATTRIBUTES))
            raise _error(filter_string, token, f"invalid attribute key {key!r} (valid: {valid})")
    if not key:
        raise _error(filter_string, token, "empty key")
    return entity, key


def parse_filter(filter_string: str | None) -> list[Clause]:
    """Parse a filter string into clauses (empty for an empty filter)."""
    text = filter_string or ""
    tokens = tokenize(text)
    clauses: list[Clause] = []
    i = 0
    n = len(tokens)

    def peek(k: int = 0) -> Token | None:
        return tokens[i + k] if i + k < n else None

    while i < n:
        tok = tokens[i]
        if tok.kind != "ident":
            raise _error(text, tok, "expected a key such as metrics.acc or params.lr")
        entity, key = _resolve_identifier(text, tok)
        i += 1
        op_tok = peek()
        if op_tok is None:
            raise _error(text, None, "expected a comparison operator")
        comparator, i = _read_comparator(text, tokens, i)
        clause, i = _read_value(text, tokens, i, entity, key, comparator, op_tok)
        clauses.append(clause)
        nxt = peek()
        if nxt is None:
            break
        if nxt.kind == "keyword" and nxt.text.upper() == "AND":
            i += 1
            if peek() is None:
                raise _error(text, None, "expected a clause after AND")
            continue
        if nxt.kind == "keyword" and nxt.text.upper() == "OR":
            raise _error(text, nxt, "OR is not supported (only AND)")
        raise _error(text, nxt, "expected AND")
    return clauses


def _read_comparator(text: str, tokens: list[Token], i: int) -> tuple[str, int]:
    tok = tokens[i]
    if tok.kind == "op":
        op = {"==": "=", "<>": "!="}.get(tok.text, tok.text)
        return op, i + 1
    if tok.kind == "keyword":
        word = tok.text.upper()
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        nxt_word = nxt.text.upper() if nxt is not None and nxt.kind == "keyword" else ""
        if word in ("LIKE", "ILIKE", "IN"):
            return word, i + 1
        if word == "NOT" and nxt_word == "IN":
            return "NOT IN", i + 2
        if word == "IS" and nxt_word == "NULL":
            return "IS NULL", i + 2
        if word == "IS" and nxt_word == "NOT":
            last = tokens[i + 2] if i + 2 < len(tokens) else None
            if last is not None and last.text.upper() == "NULL":
                return "IS NOT NULL", i + 3
            raise _error(text, last, "expected NULL after IS NOT")
    raise _error(text, tok, "expected a comparison operator (=, !=, <, <=, >, >=, LIKE, ILIKE, IN, IS)")


def _read_value(
    text: str, tokens: list[Token], i: int, entity: str, key: str, comparator: str, op_tok: Token
) -> tuple[Clause, int]:
    numeric = entity == METRIC or (entity == ATTRIBUTE and key in NUMERIC_ATTRIBUTES)
    allowed: Sequence[str]
    if numeric:
        allowed = _NUMERIC_OPS
    elif entity == ATTRIBUTE:
        allowed = (*_STRING_OPS, "IN", "NOT IN") if key in LIST_ATTRIBUTES else _STRING_OPS
    else:
        allowed = (*_STRING_OPS, "IS NULL", "IS NOT NULL")
    if comparator not in allowed:
        raise _error(text, op_tok, f"operator {comparator} is not allowed for {entity} {key!r} "
                     f"(allowed: {', '.join(allowed)})")  # fmt: skip
    if comparator in ("IS NULL", "IS NOT NULL"):
        return Clause(entity, key, comparator, None), i
    tok = tokens[i] if i < len(tokens) else None
    if tok is None:
        raise _error(text, None, f"expected a value after {comparator}")
    if comparator in ("IN", "NOT IN"):
        values, i = _read_in_list(text, tokens, i)
        return Clause(entity, key, comparator, values), i
    if numeric:
        if tok.kind != "number":
            raise _error(text, tok, f"expected a number for {entity} {key!r}")
        return Clause(entity, key, comparator, float(tok.text)), i + 1
    if tok.kind != "string":
        raise _error(text, tok, f"expected a quoted string for {entity} {key!r}")
    value: Any = _unquote_string(tok.text)
    if comparator in ("LIKE", "ILIKE"):
        flags = re.IGNORECASE | re.DOTALL if comparator == "ILIKE" else re.DOTALL
        value = re.compile(like_to_regex(value), flags)
    return Clause(entity, key, comparator, value), i + 1


def _read_in_list(text: str, tokens: list[Token], i: int) -> tuple[frozenset[str], int]:
    """`('a', 'b')` starting at token i: the strings and the index after the ')'."""
    tok = tokens[i]
    if tok.kind != "lparen":
        raise _error(text, tok, "expected '(' after IN")
    values: list[str] = []
    i += 1
    while True:
        item = tokens[i] if i < len(tokens) else None
        if item is None or item.kind != "string":
            raise _error(text, item, "expected a quoted string in the IN list")
        values.append(_unquote_string(item.text))
        sep = tokens[i + 1] if i + 1 < len(tokens) else None
        if sep is not None and sep.kind == "comma":
            i += 2
            continue
        if sep is not None and sep.kind == "rparen":
            return frozenset(values), i + 2
        raise _error(text, sep, "expected ',' or ')' in the IN list")


def like_to_regex(pattern: str) -> str:
    """SQL LIKE to an anchored regex: % any run, _ one character, the rest literal."""
    out = []
    for ch in pattern:
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
    return "".join(out) + r"\Z"


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge,
    "LIKE": lambda lhs, rx: rx.match(lhs) is not None,
    "ILIKE": lambda lhs, rx: rx.match(lhs) is not None,
    "IN": lambda lhs, values: lhs in values,
    "NOT IN": lambda lhs, values: lhs not in values,
}  # fmt: skip


_ROW_FIELDS = {METRIC: "metrics", PARAM: "params", TAG: "tags"}  # RunRow's dict per entity; else info


def _lhs(row: RunRow, clause: Clause) -> Any:
    return getattr(row, _ROW_FIELDS.get(clause.type, "info")).get(clause.key)


def holds(clause: Clause, lhs: Any) -> bool:
    """True when a run whose value for the clause's key is `lhs` (None: it has none) satisfies the
    clause (a missing key never matches, but IS NULL)."""
    comparator = clause.comparator
    if comparator == "IS NULL":
        return lhs is None
    if comparator == "IS NOT NULL":
        return lhs is not None
    return lhs is not None and bool(_OPS[comparator](lhs, clause.value))


def matches(row: RunRow, clauses: list[Clause]) -> bool:
    """True when the run satisfies every clause."""
    for clause in clauses:
        if not holds(clause, _lhs(row, clause)):
            return False
    return True


# ---------------------------------------------------------------------- order_by
@dataclass(frozen=True)
class OrderKey:
    """One order_by clause."""

    type: str
    key: str
    ascending: bool


def parse_order_by(order_by: Sequence[str] | None) -> list[OrderKey]:
    """Parse order_by strings such as 'metrics.loss DESC' or 'start_time'."""
    keys = []
    for clause in order_by or []:
        text = clause.strip()
        match = re.match(r"^(.*?)(?:\s+(ASC|DESC))?$", text, re.IGNORECASE | re.S)
        ident = (match.group(1) if match else text).strip()
        ascending = not (match and match.group(2) and match.group(2).upper() == "DESC")
        tokens = tokenize(ident) if ident else []
        if len(tokens) != 1 or tokens[0].kind != "ident":
            bad = tokens[1] if len(tokens) > 1 else (tokens[0] if tokens else None)
            raise InvalidInputError(
                f"invalid order_by clause {clause!r}"
                + (f": unexpected {bad.text!r} at position {bad.pos + 1}" if bad else ": empty"),
                hint="use '<key> [ASC|DESC]', e.g. 'metrics.loss DESC' or 'start_time'",
            )
        prefix, key = _split_identifier(tokens[0].text)
        entity = ATTRIBUTE if prefix is None else _PREFIXES.get(prefix.lower(), "")
        if entity == ATTRIBUTE:
            key = _ATTRIBUTE_ALIASES.get(key, key)
            if key not in ORDERABLE_ATTRIBUTES:
                raise InvalidInputError(
                    f"invalid order_by attribute {key!r} in {clause!r}",
                    hint=f"order by one of {', '.join(sorted(ORDERABLE_ATTRIBUTES))}, or metrics./params./tags.",
                )
        elif not entity:
            raise InvalidInputError(
                f"invalid order_by clause {clause!r}: unknown entity type {prefix!r}",
                hint="use metrics., params., tags. or attributes.",
            )
        keys.append(OrderKey(entity, key, ascending))
    return keys


def _sort_value(key: OrderKey) -> Callable[[RunRow], tuple[bool, Any]]:
    """A row's sort key for one order_by clause: a run without the key, or with NaN, comes after
    the others in either direction (as in MLflow)."""
    entity, name, ascending = _ROW_FIELDS.get(key.type, "info"), key.key, key.ascending
    fill = math.inf if ascending else -math.inf

    def value(row: RunRow) -> tuple[bool, Any]:
        value = getattr(row, entity).get(name)
        if value is None:
            return (ascending, fill)
        if value != value:  # NaN
            return (ascending, -fill)
        return (not ascending, value)

    return value


def sort_rows(rows: list[RunRow], order_by: Sequence[str] | None) -> list[RunRow]:
    """MLflow's order: start_time DESC, run_id ASC, then each order_by clause (stable, last first)."""
    keys = parse_order_by(order_by)
    rows = sorted(rows, key=lambda r: (-(r.info.get("start_time") or 0), r.info.get("run_id", "")))
    for key in reversed(keys):
        try:
            rows.sort(key=_sort_value(key), reverse=not key.ascending)
        except TypeError:  # mixed types (e.g. inf fill against strings): sort as text
            rows.sort(key=_text_sort_value(key), reverse=not key.ascending)
    return rows


def _text_sort_value(key: OrderKey) -> Callable[[RunRow], tuple[bool, str]]:
    entity, name, ascending = _ROW_FIELDS.get(key.type, "info"), key.key, key.ascending

    def value(row: RunRow) -> tuple[bool, str]:
        value = getattr(row, entity).get(name)
        missing = value is None
        text = "" if missing else str(value)
        return (missing, text) if ascending else (not missing, text)

    return value


# ---------------------------------------------------------------------- paging
def encode_page_token(offset: int) -> str:
    """MLflow's page token: base64 of json {"offset": N}."""
    return base64.b64encode(json.dumps({"offset": offset}).encode()).decode()


def decode_page_token(token: str | None) -> int:
    """The offset in a page token (0 for none); InvalidInputError for a malformed token."""
    if not token:
        return 0
    try:
        data = json.loads(base64.b64decode(token, validate=True))
        offset = data["offset"]
        if not isinstance(offset, int) or isinstance(offset, bool) or offset <= 0:
            raise ValueError
        return offset
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(
            f"invalid page token {token!r}", hint="pass the token a previous search returned"
        ) from exc


def check_max_results(max_results: int) -> int:
    """Validate max_results as MLflow does (1..50000)."""
    if not isinstance(max_results, int) or max_results <= 0 or max_results > MAX_RESULTS_LIMIT:
        raise InvalidInputError(
            f"invalid max_results {max_results!r}: it must be between 1 and {MAX_RESULTS_LIMIT}",
            hint="page through larger results with the page token",
        )
    return max_results
