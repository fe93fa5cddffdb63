"""Registry operations on model URIs: register, show with lineage, download."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlkit.errors import InvalidInputError, NotFoundError, StoreError
from mlkit.models.uri import parse_model_uri, resolve_model_uri
from mlkit.tracking.registry import RegistryStore
from mlkit.tracking.registry_entities import ModelVersion, RegisteredModel
from mlkit.tracking.registry_validation import validate_model_name


@dataclass
class Registration:
    """What `register` did: the version (new, or the existing one with `--if-new`), whether it was
    made now, and the earlier live versions registered from the same run and model."""

    version: ModelVersion
    created: bool
    same_source: list[int] = field(default_factory=list)


def register(
    uri: str,
    name: str,
    *,
    if_new: bool = False,
    tags: dict[str, Any] | None = None,
    description: str | None = None,
    root: Path | str | None = None,
    details: dict[str, Any] | None = None,
) -> Registration:
    """Register the model at `uri` as the next version of `name` (created when missing), noting
    the live versions that already hold the same run's model; with `if_new`, one of them is
    returned instead and nothing is written. The look and the write share the model's lock.

    Everything is checked before anything is written: the name, and that the URI holds a model.
    """
    validate_model_name(name)
    resolved = resolve_model_uri(uri, root=root)
    parsed = parse_model_uri(uri)
    if parsed.kind == "models" and resolved.version is not None:
        source, storage, run_id = (
            uri,
            resolved.version.storage_location or resolved.version.source,
            resolved.version.run_id,
        )
    else:
        source, storage, run_id = resolved.source, resolved.source, resolved.run_id
    registry = RegistryStore(root)
    with registry.lock(name):
        same = [v for v in _live_versions(registry, name) if (v.storage_location or v.source) == storage]
        if same and if_new:
            return Registration(same[-1], created=False, same_source=[v.version for v in same])
        version = registry.create_model_version(
            name,
            source,
            run_id=run_id,
            tags=tags,
            description=description,
            storage_location=storage,
            details=details,
        )
    return Registration(version, created=True, same_source=[v.version for v in same])


def register_model(
    uri: str,
    name: str,
    *,
    tags: dict[str, Any] | None = None,
    description: str | None = None,
    root: Path | str | None = None,
    details: dict[str, Any] | None = None,
) -> ModelVersion:
    """Register the model at `uri` as the next version of `name` (created when missing)."""
    return register(uri, name, tags=tags, description=description, root=root, details=details).version


def _live_versions(registry: RegistryStore, name: str) -> list[ModelVersion]:
    try:
        return registry.list_model_versions(name)
    except NotFoundError:
        return []


@dataclass
class DeletionImpact:
    """What `models delete` would remove: the live versions (with their stages) and the aliases
    that point at them; `version` is None when the whole model goes."""

    name: str
    version: int | None
    versions: list[ModelVersion]
    aliases: dict[str, int]
    model_tags: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """One line, e.g. "model 'cnn' with 2 versions (1, 2); stages v1 Production; aliases champion -> v1"."""
        if self.version is None:
            numbers = ", ".join(str(v.version) for v in self.versions)
            parts = [
                f"model {self.name!r} with {len(self.versions)} version(s)"
                + (f" ({numbers})" if numbers else "")
            ]
        else:
            parts = [f"version {self.version} of model {self.name!r}"]
        staged = [f"v{v.version} {v.current_stage}" for v in self.versions if v.current_stage != "None"]
        if staged:
            parts.append("stages " + ", ".join(staged))
        if self.aliases:
            parts.append("aliases " + ", ".join(f"{a} -> v{n}" for a, n in sorted(self.aliases.items())))
        if self.version is None and self.model_tags:
            parts.append(f"{len(self.model_tags)} model tag(s)")
        return "; ".join(parts)


def deletion_impact(
    name: str, version: int | str | None = None, *, root: Path | str | None = None
) -> DeletionImpact:
    """What deleting the model (or one version) would take away; NotFoundError when it is not there."""
    registry = RegistryStore(root)
    model = registry.get_registered_model(name)
    if version is None:
        versions = registry.list_model_versions(name)
        return DeletionImpact(name, None, versions, dict(model.aliases), dict(model.tags))
    found = registry.get_model_version(name, version)
    return DeletionImpact(name, found.version, [found], {a: found.version for a in found.aliases})


def delete(impact: DeletionImpact, *, root: Path | str | None = None) -> None:
    """Delete what `impact` describes: the whole model, or one version (soft)."""
    registry = RegistryStore(root)
    if impact.version is None:
        registry.delete_registered_model(impact.name)
    else:
        registry.delete_model_version(impact.name, impact.version)


@dataclass
class VersionOverview:
    """A version with what its source run recorded (for `mlkit models show`)."""

    version: ModelVersion
    run_name: str | None = None
    run_status: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


@dataclass
class ModelOverview:
    """A registered model and each live version with its source run's metrics."""

    model: RegisteredModel
    versions: list[VersionOverview]


def model_overview(name: str, *, root: Path | str | None = None) -> ModelOverview:
    """The registered model, its versions, stages, aliases and source runs' key metrics."""
    registry = RegistryStore(root)
    model = registry.get_registered_model(name)
    versions = []
    for version in registry.list_model_versions(name):
        lineage = registry.get_model_version_lineage(name, version.version)
        versions.append(
            VersionOverview(version, lineage.run_name, lineage.status, lineage.metrics, lineage.params)
        )
    return ModelOverview(model, versions)


def download_model(uri: str, out_dir: str | os.PathLike[str], *, root: Path | str | None = None) -> Path:
    """Copy the model directory a URI names to `out_dir` (which must not exist or be empty)."""
    resolved = resolve_model_uri(uri, root=root)
    target = Path(out_dir)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InvalidInputError(
            f"{target}: exists and is not an empty directory", hint="pick a new directory"
        )
    try:
        if target.exists():
            target.rmdir()
        shutil.copytree(resolved.path, target)
    except OSError as exc:
        raise StoreError(
            f"{target}: cannot copy the model: {exc}", hint="check space and permissions"
        ) from exc
    return target
