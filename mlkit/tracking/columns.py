"""Which params, metrics and tags a table of runs shows, one rule for every table.

    choose_columns(runs, ["metrics.val_*", "lr"], filter_string="metrics.acc > 0.9")

`mlkit runs list`, `mlkit runs compare` and the HTML report all go through `choose_columns` /
`ordered_keys`, so a column name means the same thing everywhere:

- A name is `params.KEY`, `metrics.KEY`, `tags.KEY`, an attribute (`status`, `start`, `duration`,
  ...), or a bare key looked up among params and metrics. KEY may be a glob: `metrics.val_*`.
  `*` is the default attributes, every param and every metric (system ones included);
  `tags.*` adds the tags.
- Keys the filter or the order-by name are always shown, right after the attributes.
- Nothing named: the params that differ between the runs (every param of a single run) and the
  model's metrics: not `system/*` and not bookkeeping such as `epoch`, `lr` or `*_per_s`,
  validation and test metrics first.

`unknown_keys` finds the names that no run has and suggests the nearest keys (difflib).
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlkit.tracking.entities import Run
from mlkit.tracking.search_grammar import ATTRIBUTE, METRIC, PARAM, TAG, parse_filter, parse_order_by

SYSTEM_PREFIX = "system/"
SECTION = {PARAM: "params", METRIC: "metrics", TAG: "tags"}
_PREFIX_KIND = {
    "param": PARAM, "params": PARAM, "metric": METRIC, "metrics": METRIC, "tag": TAG, "tags": TAG,
    "attribute": ATTRIBUTE, "attributes": ATTRIBUTE, "attr": ATTRIBUTE, "run": ATTRIBUTE,
}  # fmt: skip
# Attribute columns by their table name, and the names the filter grammar and users also use.
ATTRIBUTE_NAMES = ("run_id", "name", "status", "start", "end", "duration", "user", "experiment_id",
                   "stage", "artifact_uri")  # fmt: skip
_ATTRIBUTE_ALIASES = {"run_name": "name", "start_time": "start", "end_time": "end", "user_id": "user",
                      "lifecycle_stage": "stage", "created": "start"}  # fmt: skip
DEFAULT_ATTRIBUTES = ("run_id", "name", "status", "start", "duration")
# Logged by trainers for the record, not to judge a model by.
_BOOKKEEPING = re.compile(
    r"(epochs?|(global_)?step|lr|learning_rate|lr_\w+|\w+_per_s(ec)?|(\w+_)?time_s|\w+_seconds)"
)
_QUALITY_PREFIXES = ("val", "test", "eval", "valid")


@dataclass(frozen=True)
class Column:
    """One column: an attribute of the run, or a param, metric or tag key."""

    kind: str  # ATTRIBUTE, PARAM, METRIC or TAG (mlkit.tracking.search_grammar)
    key: str

    @property
    def name(self) -> str:
        """The header: 'status', 'params.lr', 'metrics.val_accuracy' (as the filter spells keys)."""
        return self.key if self.kind == ATTRIBUTE else f"{SECTION[self.kind]}.{self.key}"

    def value(self, run: Run) -> Any:
        """The run's raw value: str for params and tags, float for metrics, None when missing.
        Attributes: start and end in epoch ms, duration in seconds."""
        if self.kind == PARAM:
            return run.data.params.get(self.key)
        if self.kind == METRIC:
            return run.data.metrics.get(self.key)
        if self.kind == TAG:
            return run.data.tags.get(self.key)
        return attribute_value(run, self.key)


@dataclass
class ColumnChoice:
    """The columns to show. The first `fixed` are never cut to fit a terminal's width."""

    columns: list[Column]
    fixed: int
    hidden: int  # params and metrics of these runs that no column shows
    unmatched: list[str] = field(default_factory=list)  # names that matched no key (warn)


def attribute_value(run: Run, key: str) -> Any:
    """An attribute column's raw value (start/end in epoch ms, duration in seconds)."""
    info = run.info
    if key == "duration":
        return (info.end_time - info.start_time) / 1000 if info.end_time and info.start_time else None
    attr = {"name": "run_name", "start": "start_time", "end": "end_time", "user": "user_id",
            "stage": "lifecycle_stage"}.get(key, key)  # fmt: skip
    return getattr(info, attr, None)


def is_model_metric(key: str) -> bool:
    """A metric to judge a model by: not system/*, not bookkeeping (epoch, lr, *_per_s, *_time_s)."""
    return not key.startswith(SYSTEM_PREFIX) and _BOOKKEEPING.fullmatch(key) is None


def metric_order(key: str) -> tuple[int, str]:
    """Sort key: validation/test metrics, other model metrics, bookkeeping, then system metrics."""
    if key.startswith(SYSTEM_PREFIX):
        return (3, key)
    if not is_model_metric(key):
        return (2, key)
    return (0 if key.lower().startswith(_QUALITY_PREFIXES) else 1, key)


def keys_of(runs: Iterable[Run]) -> dict[str, set[str]]:
    """Every param, metric and tag key the runs have, by kind."""
    keys: dict[str, set[str]] = {PARAM: set(), METRIC: set(), TAG: set()}
    for run in runs:
        keys[PARAM].update(run.data.params)
        keys[METRIC].update(run.data.metrics)
        keys[TAG].update(run.data.tags)
    return keys


def differing_params(runs: Sequence[Run]) -> set[str]:
    """The params whose value is not the same in every run (runs that logged no params at all,
    such as one that failed at start, are left out: they would make every param differ)."""
    with_params = [r for r in runs if r.data.params]
    keys = {k for r in with_params for k in r.data.params}
    return {k for k in keys if len({r.data.params.get(k) for r in with_params}) > 1}


def ordered_keys(runs: Sequence[Run], *, system: bool = False) -> tuple[list[str], list[str]]:
    """(params, metrics) of these runs in display order: params that differ between the runs
    first, then the rest; metrics by `metric_order` (system/* only with `system`)."""
    keys = keys_of(runs)
    differs = differing_params(runs)
    params = sorted(keys[PARAM], key=lambda k: (k not in differs, k))
    metrics = sorted((k for k in keys[METRIC] if system or not k.startswith(SYSTEM_PREFIX)), key=metric_order)
    return params, metrics


def default_keys(runs: Sequence[Run]) -> tuple[list[str], list[str]]:
    """(params, metrics) shown when nothing is named: the params that tell the runs apart (all
    of them for one run) and the model's metrics."""
    params, metrics = ordered_keys(runs)
    if sum(1 for r in runs if r.data.params) > 1:
        differs = differing_params(runs)
        params = [k for k in params if k in differs]
    return params, [k for k in metrics if is_model_metric(k)]


def _attribute(name: str) -> str | None:
    name = _ATTRIBUTE_ALIASES.get(name, name)
    return name if name in ATTRIBUTE_NAMES else None


def match_columns(spec: str, keys: dict[str, set[str]]) -> list[Column]:
    """The columns one name stands for (empty when it matches nothing); see the module doc."""
    spec = spec.strip()
    if spec == "*":
        attributes = [Column(ATTRIBUTE, a) for a in DEFAULT_ATTRIBUTES]
        return (
            attributes
            + [Column(PARAM, k) for k in sorted(keys[PARAM])]
            + [Column(METRIC, k) for k in sorted(keys[METRIC], key=metric_order)]
        )
    head, dot, rest = spec.partition(".")
    kind = _PREFIX_KIND.get(head.lower()) if dot else None
    pattern = rest if kind else spec
    if pattern.startswith("`") and pattern.endswith("`") and len(pattern) >= 2:
        pattern = pattern[1:-1]
    if kind in (None, ATTRIBUTE):
        attr = _attribute(pattern)
        if attr is not None:
            return [Column(ATTRIBUTE, attr)]
        if kind == ATTRIBUTE:
            return []
    found: list[Column] = []
    for each in [kind] if kind else [PARAM, METRIC]:
        names = keys[each]
        if any(ch in pattern for ch in "*?["):
            hits = [k for k in names if fnmatch.fnmatchcase(k, pattern)]
        else:
            hits = [pattern] if pattern in names else []
        order = metric_order if each == METRIC else str
        found += [Column(each, k) for k in sorted(hits, key=order)]
    return found


def query_columns(filter_string: str = "", order_by: Sequence[str] | None = None) -> list[Column]:
    """The keys an order-by and a filter name, in that order (attributes under their column name)."""
    named = [(o.type, o.key) for o in parse_order_by(order_by)]
    named += [(c.type, c.key) for c in parse_filter(filter_string)]
    columns: list[Column] = []
    for kind, key in named:
        if kind == ATTRIBUTE:
            attr = _attribute(key)
            if attr is None:
                continue
            key = attr
        columns.append(Column(kind, key))
    return list(dict.fromkeys(columns))


def choose_columns(
    runs: Sequence[Run],
    names: Sequence[str] | None = None,
    *,
    filter_string: str = "",
    order_by: Sequence[str] | None = None,
    attributes: Sequence[str] = DEFAULT_ATTRIBUTES,
) -> ColumnChoice:
    """The columns of a runs table (see the module doc).

    With `names`: run_id and name, then the named columns in the order given, then the query's
    keys; all fixed. Without: `attributes`, the query's keys (fixed), then `default_keys`.
    """
    keys = keys_of(runs)
    unmatched: list[str] = []
    if names:
        columns = [Column(ATTRIBUTE, "run_id"), Column(ATTRIBUTE, "name")]
        for name in names:
            hits = match_columns(name, keys)
            if not hits:
                unmatched.append(name)
            columns += hits
    else:
        columns = [Column(ATTRIBUTE, a) for a in attributes]
    columns += [
        c for c in query_columns(filter_string, order_by) if c.kind == ATTRIBUTE or c.key in keys[c.kind]
    ]
    columns = list(dict.fromkeys(columns))
    fixed = len(columns)
    if not names:
        params, metrics = default_keys(runs)
        columns = list(
            dict.fromkeys(columns + [Column(PARAM, k) for k in params] + [Column(METRIC, k) for k in metrics])
        )
    shown = sum(1 for c in columns if c.kind in (PARAM, METRIC))
    hidden = len(keys[PARAM]) + len(keys[METRIC]) - shown
    return ColumnChoice(columns, fixed, max(hidden, 0), unmatched)


def split_names(values: Iterable[str] | None) -> list[str]:
    """`--columns a,b --columns c` -> ['a', 'b', 'c'] (commas inside backquotes kept)."""
    out: list[str] = []
    for value in values or []:
        out += [part.strip() for part in re.split(r",(?=(?:[^`]*`[^`]*`)*[^`]*$)", value) if part.strip()]
    return out


# ---------------------------------------------------------------------- names that match nothing
@dataclass(frozen=True)
class UnknownKey:
    """A key named on the command line that no run in scope has, and the nearest keys that exist."""

    flag: str  # "--filter", "--order-by", "--metric", "--columns"
    name: str  # as a filter spells it: metrics.val_acc
    suggestions: tuple[str, ...]

    def __str__(self) -> str:
        near = f"; did you mean {' or '.join(self.suggestions)}?" if self.suggestions else ""
        return f"{self.flag}: no run here has {self.name}{near}"


def suggest(name: str, keys: dict[str, set[str]], n: int = 3) -> tuple[str, ...]:
    """The keys nearest `name` (a bare key or 'metrics.key'), over every kind, as 'metrics.key'."""
    head, dot, bare = name.partition(".")
    if not (dot and head.lower() in _PREFIX_KIND):
        bare = name
    by_bare: dict[str, list[str]] = {}
    for kind, names in keys.items():
        for key in names:
            by_bare.setdefault(key, []).append(f"{SECTION[kind]}.{key}")
    near = difflib.get_close_matches(bare, list(by_bare), n=n, cutoff=0.6)
    return tuple(full for key in near for full in sorted(by_bare[key]))[:n]


def unknown_keys(flag: str, named: Iterable[Column], keys: dict[str, set[str]]) -> list[UnknownKey]:
    """The param/metric/tag columns in `named` that are in none of `keys`, with suggestions."""
    found = []
    for column in named:
        if column.kind != ATTRIBUTE and column.key not in keys.get(column.kind, set()):
            found.append(UnknownKey(flag, column.name, suggest(column.key, keys)))
    return found
