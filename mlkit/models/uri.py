"""Model URIs, resolved the same way in Python and on the command line.

- `runs:/<run>/<path>`            a model directory in a run's artifacts; <run> is a run id, a
                                  unique id prefix or a unique run name (`runs:/lr0.003-w32/model`),
                                  resolved by `mlkit.tracking.resolve.resolve_run`
- `models:/<name>/<version>`      a registered version
- `models:/<name>/<stage>`        the highest version in that stage (None/Staging/Production/Archived)
- `models:/<name>/latest`         the highest live version
- `models:/<name>@<alias>`        the version an alias points at
- a local directory path or `file://` URI holding an `MLmodel` file
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlkit.errors import InvalidInputError, NotFoundError
from mlkit.tracking import files
from mlkit.tracking.registry import RegistryStore
from mlkit.tracking.registry_entities import ModelVersion
from mlkit.tracking.registry_validation import canonical_stage, is_stage, validate_alias, validate_model_name
from mlkit.tracking.store import FileStore
from mlkit.tracking.validation import validate_artifact_path

MLMODEL_FILE = "MLmodel"


@dataclass(frozen=True)
class ModelUri:
    """A parsed model URI. `kind` is 'runs', 'models' or 'path'."""

    uri: str
    kind: str
    run_id: str | None = None  # for runs:/, the run as written: an id, a unique prefix or a name
    artifact_path: str | None = None
    name: str | None = None
    version: int | None = None
    stage: str | None = None
    alias: str | None = None
    latest: bool = False
    path: Path | None = None


@dataclass
class ResolvedModel:
    """Where a model URI points: the local model directory, and its run and registry version."""

    uri: str
    path: Path
    run_id: str | None
    artifact_path: str | None
    source: str  # the runs:/ (or path) URI a registry version stores
    version: ModelVersion | None = None


def _bad(uri: str, why: str) -> InvalidInputError:
    return InvalidInputError(
        f"invalid model URI {uri!r}: {why}",
        hint="use runs:/RUN/model (a run id, prefix or name), models:/NAME/VERSION, models:/NAME/STAGE, models:/NAME/latest or models:/NAME@ALIAS",
    )


def parse_model_uri(uri: str) -> ModelUri:
    """Parse a model URI without touching the store."""
    if not isinstance(uri, str) or not uri.strip():
        raise _bad(str(uri), "it is empty")
    uri = uri.strip()
    if uri.startswith("runs:"):
        return _parse_runs_uri(uri)
    if uri.startswith("models:"):
        return _parse_models_uri(uri)
    local = files.path_from_uri(uri)
    if local is None:
        raise _bad(uri, "only runs:/, models:/, file:// and local paths are supported")
    return ModelUri(uri, "path", path=local.expanduser().absolute())


def _parse_runs_uri(uri: str) -> ModelUri:
    """runs:/RUN/PATH (RUN: an id, an id prefix or a run name)."""
    rest = uri[len("runs:") :].lstrip("/")
    run_id, _, path = rest.partition("/")
    if not run_id:
        raise _bad(uri, "no run id after runs:/")
    if run_id in (".", "..") or not run_id.isprintable() or run_id != run_id.strip():
        raise _bad(uri, f"{run_id!r} is not a run id, id prefix or run name")
    try:
        artifact_path = validate_artifact_path(path.rstrip("/"))
    except InvalidInputError as exc:
        raise _bad(uri, exc.message) from exc
    return ModelUri(uri, "runs", run_id=run_id, artifact_path=artifact_path)


def _parse_models_uri(uri: str) -> ModelUri:
    """models:/NAME/VERSION, models:/NAME/STAGE, models:/NAME/latest or models:/NAME@ALIAS."""
    rest = uri[len("models:") :]
    if not rest.startswith("/") or rest.startswith("//"):
        raise _bad(uri, "expected models:/NAME/... (one slash)")
    rest = rest[1:]
    if "/" not in rest and "@" in rest:
        name, _, alias = rest.rpartition("@")
        try:
            validate_model_name(name)
            validate_alias(alias, reserved_ok=True)
        except InvalidInputError as exc:
            raise _bad(uri, exc.message) from exc
        if alias.lower() == "latest":
            return ModelUri(uri, "models", name=name, latest=True)
        return ModelUri(uri, "models", name=name, alias=alias)
    name, sep, suffix = rest.partition("/")
    if not sep or not suffix or "/" in suffix:
        raise _bad(
            uri,
            "expected models:/NAME/VERSION, models:/NAME/STAGE, models:/NAME/latest or models:/NAME@ALIAS",
        )
    try:
        validate_model_name(name)
    except InvalidInputError as exc:
        raise _bad(uri, exc.message) from exc
    if suffix.isdigit():
        if int(suffix) < 1:
            raise _bad(uri, "versions start at 1")
        return ModelUri(uri, "models", name=name, version=int(suffix))
    if suffix.lower() == "latest":
        return ModelUri(uri, "models", name=name, latest=True)
    if is_stage(suffix):
        return ModelUri(uri, "models", name=name, stage=canonical_stage(suffix))
    raise _bad(
        uri,
        f"{suffix!r} is neither a version number, a stage (None, Staging, Production, Archived) nor 'latest'",
    )


def resolve_version(parsed: ModelUri, registry: RegistryStore) -> ModelVersion:
    """The registry version a models:/ URI names (NotFoundError when there is none)."""
    assert parsed.name is not None
    if parsed.version is not None:
        return registry.get_model_version(parsed.name, parsed.version)
    if parsed.stage is not None:
        return registry.get_version_by_stage(parsed.name, parsed.stage)
    if parsed.alias is not None:
        return registry.get_version_by_alias(parsed.name, parsed.alias)
    return registry.get_latest_version(parsed.name)


def resolve_model_uri(uri: str, *, root: Path | str | None = None, _depth: int = 0) -> ResolvedModel:
    """Resolve a model URI to its local directory; NotFoundError unless an MLmodel file is there."""
    parsed = parse_model_uri(uri)
    if parsed.kind == "runs":
        # import budget: the run resolver loads only for a runs:/ URI
        from mlkit.tracking.resolve import resolve_run

        store = FileStore(root)
        run_id = resolve_run(store, parsed.run_id or "")  # an id, a unique prefix or a unique name
        base = store.artifact_dir(run_id)
        path = base / parsed.artifact_path if parsed.artifact_path else base
        resolved = ResolvedModel(
            uri,
            path,
            run_id,
            parsed.artifact_path,
            f"runs:/{run_id}/{parsed.artifact_path or ''}".rstrip("/"),
        )
    elif parsed.kind == "path":
        assert parsed.path is not None
        resolved = ResolvedModel(uri, parsed.path, None, None, str(parsed.path))
    else:
        registry = RegistryStore(root)
        version = resolve_version(parsed, registry)
        location = version.storage_location or version.source
        if _depth > 3:
            raise InvalidInputError(
                f"{uri}: registry sources point at each other in a loop", hint="fix the source"
            )
        try:
            inner = resolve_model_uri(location, root=root, _depth=_depth + 1)
        except InvalidInputError as exc:
            raise InvalidInputError(
                f"{uri}: version {version.version} has source {location!r}, which mlkit cannot read ({exc.message})",
                hint="mlkit reads runs:/ and local file sources",
            ) from exc
        inner.uri, inner.version = uri, version
        return inner
    if not (resolved.path / MLMODEL_FILE).is_file():
        raise NotFoundError(
            f"{uri}: no model there (no {MLMODEL_FILE} file in {resolved.path})",
            hint="log one with mlkit.log_model(model, 'model'); list a run's artifacts with `mlkit runs show RUN`",
        )
    return resolved
