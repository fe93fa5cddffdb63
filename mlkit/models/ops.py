"""Registry operations on model URIs: register, show with lineage, download."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlkit.errors import InvalidInputError, StoreError
from mlkit.models.uri import parse_model_uri, resolve_model_uri
from mlkit.tracking.registry import ModelVersion, RegisteredModel, RegistryStore, validate_model_name


def register_model(
    uri: str,
    name: str,
    *,
    tags: dict[str, Any] | None = None,
    description: str | None = None,
    root: Path | str | None = None,
    details: dict[str, Any] | None = None,
) -> ModelVersion:
    """Register the model at `uri` as the next version of `name` (created when missing).

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
    return RegistryStore(root).create_model_version(
        name,
        source,
        run_id=run_id,
        tags=tags,
        description=description,
        storage_location=storage,
        details=details,
    )


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
