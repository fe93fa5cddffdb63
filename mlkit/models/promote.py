"""Promote a run's model when it beats the current holder of an alias or stage (for cron jobs).

    promote("cnn", from_run=RUN, if_better="metrics.val_accuracy > champion")

The condition is `metrics.<key> (>|<|>=|<=) <reference>`. The operator gives the direction (`>`:
higher is better). The reference is whose value the candidate must beat: a stage name (the highest
version in that stage) or an alias. `champion` means the current holder of the target. The
target is `alias=` or `stage=`; by default, the reference itself (so the example promotes to the
alias `champion`). Nothing is written unless the candidate is promoted.
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlkit.errors import InvalidInputError, NotFoundError
from mlkit.models.ops import register_model
from mlkit.models.uri import resolve_model_uri
from mlkit.tracking.columns import metric_order
from mlkit.tracking.registry import RegistryStore
from mlkit.tracking.registry_entities import ACTIVE_STAGES, ModelVersion
from mlkit.tracking.registry_validation import canonical_stage, is_stage, validate_alias, validate_model_name
from mlkit.tracking.store import FileStore

CHAMPION = "champion"
_OPS = {">": operator.gt, "<": operator.lt, ">=": operator.ge, "<=": operator.le}
_CONDITION_RE = re.compile(r"^\s*metrics\.(?P<key>[^\s<>=!]+)\s*(?P<op>>=|<=|>|<)\s*(?P<ref>[\w\-]+)\s*$")


@dataclass(frozen=True)
class Condition:
    """A parsed `metrics.<key> <op> <reference>`."""

    metric: str
    op: str
    reference: str

    def holds(self, candidate: float, holder: float) -> bool:
        return bool(_OPS[self.op](candidate, holder))

    def __str__(self) -> str:
        return f"metrics.{self.metric} {self.op} {self.reference}"


@dataclass
class PromoteResult:
    """What `promote` decided, and why."""

    promoted: bool
    name: str
    target: str  # "alias champion" or "stage Production"
    run_id: str
    metric: str
    candidate_value: float | None
    version: int | None  # the candidate's registered version (None when kept and never registered)
    previous: int | None  # the version that held the target before
    holder_value: float | None
    reason: str


def parse_condition(expression: str) -> Condition:
    """Parse `metrics.<key> (>|<|>=|<=) (champion|<stage>|<alias>)`; InvalidInputError otherwise."""
    match = _CONDITION_RE.match(expression or "")
    if not match:
        raise InvalidInputError(
            f"invalid --if-better {expression!r}: expected 'metrics.<key> (>|<|>=|<=) <champion|stage|alias>'",
            hint="e.g. --if-better 'metrics.val_accuracy > champion' or 'metrics.val_loss < Production'",
        )
    reference = match["ref"]
    if not is_stage(reference):
        validate_alias(reference)
    return Condition(
        match["key"], match["op"], canonical_stage(reference) if is_stage(reference) else reference
    )


def _holder(
    registry: RegistryStore, name: str, *, alias: str | None, stage: str | None
) -> ModelVersion | None:
    try:
        if alias is not None:
            return registry.get_version_by_alias(name, alias)
        assert stage is not None
        return registry.get_version_by_stage(name, stage)
    except NotFoundError:
        return None


def _describe(alias: str | None, stage: str | None) -> str:
    return f"alias {alias}" if alias is not None else f"stage {stage}"


def _target(condition: Condition, alias: str | None, stage: str | None) -> tuple[str | None, str | None]:
    """(alias, stage) to promote to: the one given, else the condition's reference (checked)."""
    if alias is not None and stage is not None:
        raise InvalidInputError(
            "give either an alias or a stage to promote to, not both", hint="e.g. --alias champion"
        )
    if alias is not None:
        validate_alias(alias)
    elif stage is not None:
        stage = canonical_stage(stage)
    elif is_stage(condition.reference):
        stage = condition.reference
    else:
        alias = condition.reference
    if stage is not None and stage not in ACTIVE_STAGES + ("Archived", "None"):
        raise InvalidInputError(f"cannot promote to stage {stage}", hint="use Staging or Production")
    return alias, stage


def _candidate_value(run_id: str, metrics: dict[str, float], metric: str) -> float:
    """The run's value of the compared metric, or an error naming the close ones it has."""
    if metric not in metrics:
        near = difflib.get_close_matches(metric, list(metrics), n=3, cutoff=0.6)
        did = f"; did you mean {' or '.join(f'metrics.{k}' for k in near)}?" if near else ""
        known = ", ".join(sorted(metrics, key=metric_order)[:12]) or "none"
        raise InvalidInputError(
            f"--if-better: run {run_id} has no metric {metric!r} to compare{did}",
            hint=f"its metrics: {known}",
        )
    return float(metrics[metric])


def promote(
    name: str,
    *,
    from_run: str,
    if_better: str,
    alias: str | None = None,
    stage: str | None = None,
    artifact_path: str = "model",
    archive_existing: bool = True,
    root: Path | str | None = None,
) -> PromoteResult:
    """Register `from_run`'s model and move the alias/stage to it if it beats the holder."""
    # import budget: the run resolver loads only when a promotion runs
    from mlkit.tracking.resolve import resolve_run

    validate_model_name(name)
    condition = parse_condition(if_better)
    explicit_target = alias is not None or stage is not None
    alias, stage = _target(condition, alias, stage)

    store = FileStore(root)
    run_id = resolve_run(store, from_run)
    run = store.get_run(run_id)
    candidate = _candidate_value(run_id, run.data.metrics, condition.metric)
    uri = f"runs:/{run_id}/{artifact_path}"
    resolve_model_uri(uri, root=root)  # NotFoundError when the run has no model there

    registry = RegistryStore(root)
    target = _describe(alias, stage)
    with registry.lock(name):
        exists = (registry.models_dir / name / "meta.yaml").is_file()
        holder_now = _holder(registry, name, alias=alias, stage=stage) if exists else None
        if condition.reference == CHAMPION and explicit_target:
            reference = holder_now
        elif is_stage(condition.reference):
            reference = _holder(registry, name, alias=None, stage=condition.reference) if exists else None
        else:
            reference = _holder(registry, name, alias=condition.reference, stage=None) if exists else None
        existing = None
        if exists:
            for version in registry.list_model_versions(name):
                if version.run_id == run_id and uri in (version.source, version.storage_location):
                    existing = version
        result = PromoteResult(
            promoted=False,
            name=name,
            target=target,
            run_id=run_id,
            metric=condition.metric,
            candidate_value=candidate,
            version=existing.version if existing else None,
            previous=holder_now.version if holder_now else None,
            holder_value=None,
            reason="",
        )
        if holder_now is not None and existing is not None and holder_now.version == existing.version:
            result.reason = f"version {existing.version} (run {run_id}) already holds {target}"
            return result
        if reference is None:
            result.reason = f"nothing holds {condition.reference} yet"
        else:
            lineage = registry.get_model_version_lineage(name, reference.version)
            held = lineage.metrics.get(condition.metric)
            if held is None or math.isnan(held):
                result.reason = f"version {reference.version} ({condition.reference}) has no value of metrics.{condition.metric}"
            else:
                result.holder_value = float(held)
                if not condition.holds(candidate, held):
                    result.reason = (
                        f"metrics.{condition.metric} {candidate:g} is not {condition.op} {held:g} "
                        f"(version {reference.version}, {condition.reference}); kept"
                    )
                    return result
                result.reason = (
                    f"metrics.{condition.metric} {candidate:g} {condition.op} {held:g} "
                    f"(version {reference.version}, {condition.reference})"
                )
        details: dict[str, Any] = {"reason": result.reason, "condition": str(condition), "run_id": run_id}
        version = existing or register_model(uri, name, root=root, details={"reason": "promote"})
        if alias is not None:
            registry.set_alias(name, alias, version.version, details=details)
        else:
            assert stage is not None
            registry.transition_model_version_stage(
                name,
                version.version,
                stage,
                archive_existing=archive_existing and stage in ACTIVE_STAGES,
                details=details,
            )
        result.promoted = True
        result.version = version.version
        return result
