"""gc's retention rules, pure: which ended runs a `RetentionPolicy` keeps and why.

`mlkit gc` (tracking/gc.py) plans and removes; this module only decides, from a `Candidate` per
ended run (start, end, the metric), so the rules are tested without a store.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from mlkit.errors import UsageError
from mlkit.tracking.entities import FAILED, FINISHED, KILLED
from mlkit.units import format_duration

ENDED_STATUSES = (FINISHED, FAILED, KILLED)


@dataclass(frozen=True)
class RetentionPolicy:
    """Keep rules for ended runs. A rule left at None is not applied; no rule, no retention."""

    older_than: float | None = None  # seconds
    keep_last: int | None = None
    keep_best: int | None = None
    metric: str | None = None
    mode: str | None = None  # "min" or "max": which values of `metric` are best
    statuses: tuple[str, ...] = ENDED_STATUSES

    def __post_init__(self) -> None:
        for name in ("keep_last", "keep_best"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise UsageError(f"--{name.replace('_', '-')} {value}: must be 0 or more", hint="e.g. 20")
        if self.older_than is not None and self.older_than < 0:
            raise UsageError("--older-than must not be negative", hint="e.g. 30d")
        if self.keep_best is not None:
            if not self.metric:
                raise UsageError(
                    "--keep-best needs --metric", hint="e.g. --keep-best 5 --metric val_loss --min"
                )
            if self.mode not in ("min", "max"):
                raise UsageError(
                    f"--keep-best {self.keep_best} --metric {self.metric}: needs --min or --max (is lower or higher better?)",
                    hint="add --min (e.g. for a loss) or --max (e.g. for an accuracy)",
                )
        bad = [s for s in self.statuses if s not in ENDED_STATUSES]
        if bad:
            raise UsageError(
                f"--status {bad[0]}: gc only applies retention to ended runs",
                hint=f"use one of {', '.join(ENDED_STATUSES)}",
            )

    @property
    def active(self) -> bool:
        """True when at least one keep rule is given (else only deleted runs and orphans go)."""
        return self.older_than is not None or self.keep_last is not None or self.keep_best is not None

    def describe(self) -> str:
        """The rule in words, e.g. 'keep a run if among the last 20, or ended within 30d'."""
        if not self.active:
            return "no retention rule: only deleted runs and orphans are removed"
        parts = []
        if self.keep_last is not None:
            parts.append(f"it is among the last {self.keep_last} by start time")
        if self.keep_best is not None:
            parts.append(f"it is among the best {self.keep_best} by {self.metric} ({self.mode})")
        if self.older_than is not None:
            parts.append(f"it ended less than {format_duration(self.older_than)} ago")
        scope = "/".join(self.statuses)
        return f"an ended run ({scope}) is kept if " + ", or ".join(parts)


@dataclass
class Candidate:
    """What the retention rules look at for one ended run."""

    run_id: str
    start_time: int | None
    end_time: int | None
    metric: float | None = None


def select_retention(
    candidates: Iterable[Candidate], policy: RetentionPolicy, now_ms: int
) -> tuple[dict[str, str], dict[str, str]]:
    """Apply the keep rules to one experiment's ended runs: ({run_id: why removed}, {run_id: why kept})."""
    runs = list(candidates)
    if not policy.active:
        return {}, {r.run_id: "no retention rule" for r in runs}
    keep: dict[str, list[str]] = {r.run_id: [] for r in runs}
    if policy.keep_last is not None:
        newest = sorted(runs, key=lambda r: (r.start_time or 0, r.run_id), reverse=True)
        for r in newest[: policy.keep_last]:
            keep[r.run_id].append(f"among the last {policy.keep_last}")
    if policy.keep_best is not None:
        scored = [r for r in runs if r.metric is not None and not math.isnan(r.metric)]
        sign = 1 if policy.mode == "min" else -1
        # r.metric is not None in `scored` (filtered just above); mypy cannot see it through the lambda
        scored.sort(key=lambda r: (sign * r.metric, -(r.start_time or 0), r.run_id))  # type: ignore[operator]
        for r in scored[: policy.keep_best]:
            keep[r.run_id].append(f"among the best {policy.keep_best} by {policy.metric}")
    if policy.older_than is not None:
        cutoff = now_ms - policy.older_than * 1000
        for r in runs:
            ended = r.end_time or r.start_time
            if ended is None or ended > cutoff:
                keep[r.run_id].append(f"ended within {format_duration(policy.older_than)}")
    removed, kept = {}, {}
    for r in runs:
        if keep[r.run_id]:
            kept[r.run_id] = "; ".join(keep[r.run_id])
            continue
        why = []
        if policy.older_than is not None:
            ended = r.end_time or r.start_time or 0
            why.append(
                f"ended {format_duration(max(0, now_ms - ended) / 1000)} ago (limit {format_duration(policy.older_than)})"
            )
        if policy.keep_last is not None:
            why.append(f"not among the last {policy.keep_last}")
        if policy.keep_best is not None:
            if r.metric is None or math.isnan(r.metric):
                why.append(f"no {policy.metric} value")
            else:
                why.append(f"not among the best {policy.keep_best} by {policy.metric}")
        removed[r.run_id] = "; ".join(why)
    return removed, kept
