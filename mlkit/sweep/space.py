"""The search space of a sweep, from its `-P` values, checked against the project's parameter types.

    lr=1e-4,3e-4,1e-3         a list: one grid axis (`lr=0.1` alone is a fixed value)
    seed=range(0,3)           range(a,b[,step]): integers a, a+step, ... below b (a grid axis)
    lr=uniform(1e-4,1e-1)     a float drawn uniformly           (random / Optuna only)
    lr=loguniform(1e-5,1e-2)  a float drawn on a log scale      (random / Optuna only)
    width=int(16,128)         an integer a..b, both included    (random / Optuna only)
    act=choice(relu,gelu)     one of the values (a grid axis in a grid sweep)

Pure: no Optuna here (mlkit.sweep.study maps these onto Optuna's distributions).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from mlkit.errors import UsageError

_CALL = re.compile(r"^\s*(range|uniform|loguniform|int|choice)\s*\((.*)\)\s*$", re.DOTALL)
GRID_KINDS = ("fixed", "list", "range", "choice")
MAX_GRID = 100_000  # trials a grid (or --trials) may expand to before it is refused as a typo
MAX_INT = 2**63 - 1  # range() and int() bounds: what an int64 holds


@dataclass(frozen=True)
class Dimension:
    """One swept parameter: `kind` is fixed | list | range | choice | uniform | loguniform | int.
    `values` holds the grid values (as the strings passed to the entry point); `low`/`high` the bounds."""

    name: str
    kind: str
    values: tuple[str, ...] = ()
    low: float = 0.0
    high: float = 0.0

    @property
    def is_grid(self) -> bool:
        return self.kind in GRID_KINDS

    def describe(self) -> str:
        if self.kind == "fixed":
            return self.values[0]
        if self.kind in ("list", "range"):
            return ",".join(self.values)
        if self.kind == "choice":
            return f"choice({','.join(self.values)})"
        return f"{self.kind}({_num(self.low)},{_num(self.high)})"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(float(x))


def _bad(name: str, raw: str, what: str, hint: str) -> UsageError:
    return UsageError(f"-P {name}={raw}: {what}", hint=hint)


def _float(name: str, raw: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _bad(
            name, raw, f"{text.strip()!r} is not a number", "bounds are numbers, e.g. uniform(0.1,0.9)"
        ) from None
    if not math.isfinite(value):
        raise _bad(name, raw, f"{text.strip()!r} is not a finite number", "use finite bounds")
    return value


def _int(name: str, raw: str, text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise _bad(
            name, raw, f"{text.strip()!r} is not an integer", "range() and int() take integers"
        ) from None
    if not -MAX_INT <= value <= MAX_INT:
        raise _bad(
            name, raw, f"{_short(text)} is out of range", f"integers are -{MAX_INT}..{MAX_INT} (int64)"
        )
    return value


def _short(text: str) -> str:
    text = text.strip()
    return repr(text if len(text) <= 24 else text[:20] + "...")


def _range_values(name: str, raw: str, args: list[str]) -> tuple[str, ...]:
    """range(b) / range(a,b) / range(a,b,step) as its values (at most MAX_GRID of them)."""
    if not 1 <= len(args) <= 3:
        raise _bad(name, raw, "range() takes 1 to 3 integers", "range(b), range(a,b) or range(a,b,step)")
    nums = [_int(name, raw, a) for a in args]
    if len(nums) == 3 and nums[2] == 0:
        raise _bad(name, raw, "range() step must not be 0", "e.g. range(0,10,2)")
    span = range(*nums)
    if span[MAX_GRID:]:  # counted before it is built (len() itself overflows past int64)
        raise _bad(name, raw, f"range() has more than {MAX_GRID} values",
                   "a grid axis this long is likely a typo; use int(a,b) in a random or tpe sweep")  # fmt: skip
    values = tuple(str(v) for v in span)
    if not values:
        raise _bad(name, raw, "range() is empty", "the start must come before the end (Python's range)")
    return values


def parse_dimension(name: str, raw: str) -> Dimension:
    """One `-P name=raw` of a sweep as a Dimension; a UsageError (exit 2) naming the flag when bad."""
    match = _CALL.match(raw)
    if match is None:
        values = tuple(v.strip() for v in raw.split(","))
        if len(values) > 1 and any(v == "" for v in values):
            raise _bad(name, raw, "an empty value in the list", "write the list as a,b,c with no empty items")
        return Dimension(name, "fixed" if len(values) == 1 else "list", values)
    func, inner = match.group(1), match.group(2)
    args = [a.strip() for a in inner.split(",")] if inner.strip() else []
    if func == "choice":
        if not args or any(a == "" for a in args):
            raise _bad(name, raw, "choice() needs one or more values", "e.g. choice(32,64,128)")
        return Dimension(name, "choice", tuple(args))
    if func == "range":
        return Dimension(name, "range", _range_values(name, raw, args))
    if len(args) != 2:
        raise _bad(name, raw, f"{func}() takes two bounds", f"e.g. {func}(1,10)")
    if func == "int":
        low_i, high_i = _int(name, raw, args[0]), _int(name, raw, args[1])
        if low_i > high_i:
            raise _bad(name, raw, "the low bound is above the high bound", f"int({high_i},{low_i})")
        return Dimension(name, "int", low=low_i, high=high_i)
    low, high = _float(name, raw, args[0]), _float(name, raw, args[1])
    if low >= high:
        raise _bad(
            name, raw, "the low bound must be below the high bound", f"{func}(low,high) with low < high"
        )
    if not math.isfinite(high - low):
        raise _bad(name, raw, "the bounds are too far apart", "keep high - low within a float's range")
    if func == "loguniform" and low <= 0:
        raise _bad(name, raw, "loguniform() bounds must be above 0", "e.g. loguniform(1e-5,1e-2)")
    return Dimension(name, func, low=low, high=high)


def parse_space(params: dict[str, str]) -> list[Dimension]:
    """Every `-P` of a sweep as a Dimension, in the order given."""
    return [parse_dimension(name, raw) for name, raw in params.items()]


def check_types(space: list[Dimension], types: dict[str, str]) -> None:
    """Refuse what the project's declared types (`types`: name -> string|float|int|path|uri) cannot
    take: a list value that is not an int, `uniform()` for an int parameter, ... (exit 2)."""
    # import budget: the project's value checker is the one `mlkit run` uses
    from mlkit.project.values import check_value

    for dim in space:
        ptype = types.get(dim.name)
        if ptype is None:
            continue
        raw = dim.describe()
        for value in dim.values:
            problem = check_value(ptype, value)
            if problem:
                raise _bad(dim.name, raw, f"{problem} (the MLproject declares {dim.name} as {ptype})",
                           f"give {ptype} values for {dim.name}")  # fmt: skip
        if dim.kind in ("uniform", "loguniform") and ptype not in ("float", "string"):
            hint = f"use int({int(dim.low)},{int(dim.high)})" if ptype == "int" else "use a list or choice()"
            raise _bad(
                dim.name,
                raw,
                f"{dim.kind}() draws floats; the MLproject declares {dim.name} as {ptype}",
                hint,
            )
        if dim.kind == "int" and ptype not in ("int", "float", "string"):
            raise _bad(dim.name, raw, f"int() draws integers; the MLproject declares {dim.name} as {ptype}",
                       "use a list or choice() of values")  # fmt: skip


def default_method(space: list[Dimension]) -> str:
    """grid when every dimension is a list/range/choice/fixed value, else Optuna's TPE."""
    return "grid" if all(d.is_grid for d in space) else "tpe"


def grid(space: list[Dimension]) -> list[dict[str, str]]:
    """Every combination of the grid axes, the first -P varying slowest (as Hydra and Guild)."""
    for dim in space:
        if not dim.is_grid:
            raise _bad(dim.name, dim.describe(), f"{dim.kind}() has no grid values",
                       "use --method random or tpe (with --trials N), or give a list / range()")  # fmt: skip
    size = math.prod(len(d.values) for d in space)
    if size > MAX_GRID:
        raise UsageError(f"the grid has {size} trials (more than {MAX_GRID})", hint="sweep fewer values")
    names = [d.name for d in space]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(d.values for d in space))]


def fixed_params(space: list[Dimension]) -> dict[str, str]:
    """The parameters with one value (passed unchanged to every trial)."""
    return {d.name: d.values[0] for d in space if d.kind == "fixed"}


def format_value(dim: Dimension, value: Any) -> str:
    """A sampled value as the string a trial gets on its command line."""
    if dim.kind == "int":
        return str(int(value))
    if dim.kind in ("uniform", "loguniform"):
        return repr(float(value))
    return str(value)


def trial_key(entry_point: str, params: dict[str, str], slot: int | None = None) -> str:
    """A trial's deterministic key: a hash of the entry point and its parameter assignment (and, for
    a sequential search whose sampler may suggest an assignment twice, its slot in the sweep)."""
    doc: dict[str, Any] = {"entry_point": entry_point, "params": dict(sorted(params.items()))}
    if slot is not None:
        doc["slot"] = slot
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]
