"""The model registry's entities: registered models, their versions, audit log lines, lineage;
and the stages a version can be in (MLflow's names)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STAGE_NONE, STAGE_STAGING, STAGE_PRODUCTION, STAGE_ARCHIVED = "None", "Staging", "Production", "Archived"
STAGES = (STAGE_NONE, STAGE_STAGING, STAGE_PRODUCTION, STAGE_ARCHIVED)
ACTIVE_STAGES = (STAGE_STAGING, STAGE_PRODUCTION)
STAGE_DELETED_INTERNAL = "Deleted_Internal"


@dataclass
class ModelVersion:
    """One version of a registered model (`version-<n>/meta.yaml` plus its tags and aliases)."""

    name: str
    version: int
    creation_timestamp: int
    last_updated_timestamp: int
    current_stage: str
    description: str | None
    source: str
    run_id: str | None
    status: str = "READY"
    tags: dict[str, str] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)
    storage_location: str | None = None
    run_link: str | None = None
    user_id: str | None = None


@dataclass
class RegisteredModel:
    """A registered model: its meta.yaml, tags, aliases and the latest version of each stage."""

    name: str
    creation_timestamp: int
    last_updated_timestamp: int
    description: str | None
    tags: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, int] = field(default_factory=dict)
    latest_versions: list[ModelVersion] = field(default_factory=list)


@dataclass
class HistoryEntry:
    """One line of a model's audit log: who changed what, when, from what to what."""

    when: str
    who: str
    what: str
    model: str
    version: int | None = None
    from_: str | None = None
    to: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "when": self.when,
            "who": self.who,
            "what": self.what,
            "model": self.model,
            "version": self.version,
            "from": self.from_,
            "to": self.to,
            **({"details": self.details} if self.details else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HistoryEntry:
        return cls(
            when=str(data.get("when", "")),
            who=str(data.get("who", "")),
            what=str(data.get("what", "")),
            model=str(data.get("model", "")),
            version=data.get("version"),
            from_=data.get("from"),
            to=data.get("to"),
            details=dict(data.get("details") or {}),
        )


@dataclass
class VersionLineage:
    """Where a model version came from: its source run's params and latest metrics."""

    name: str
    version: int
    source: str
    run_id: str | None
    run_found: bool = False
    experiment_id: str | None = None
    run_name: str | None = None
    status: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
