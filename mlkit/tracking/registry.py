"""The model registry: MLflow's registry FileStore layout under `<root>/models/` (mlflow-compat.md 4.10).

```
<root>/models/<name>/meta.yaml            the registered model (aliases map mirrored here)
<root>/models/<name>/tags/<key>           registry tags
<root>/models/<name>/aliases/<alias>      file content = the version number
<root>/models/<name>/version-<n>/meta.yaml
<root>/models/<name>/version-<n>/tags/<key>
<root>/models/<name>/history.jsonl        mlkit's audit log (MLflow ignores files there)
<root>/models/.<name>.lock                fcntl lock: one writer per registered model at a time
```

The module is the RegistryStore class alone (one idea, reading and writing that layout, so longer
than most modules); its entities are in registry_entities.py, its input rules in
registry_validation.py.

Every change takes the model's lock, writes meta files atomically (temp file + rename) and
appends one JSON line to the audit log. Version directories are created with `mkdir` (exclusive),
so numbers stay unique even against writers that do not take the lock (MLflow itself).
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mlkit import fsio, settings
from mlkit.errors import InvalidInputError, NotFoundError, StoreError
from mlkit.tracking import files
from mlkit.tracking.registry_entities import (
    ACTIVE_STAGES,
    STAGE_ARCHIVED,
    STAGE_DELETED_INTERNAL,
    STAGE_NONE,
    STAGES,
    HistoryEntry,
    ModelVersion,
    RegisteredModel,
    VersionLineage,
)
from mlkit.tracking.registry_validation import (
    canonical_stage,
    validate_alias,
    validate_model_name,
    validate_tag,
    validate_tags,
    validate_version,
)
from mlkit.tracking.store import FileStore
from mlkit.tracking.validation import validate_key

MODELS_DIR = "models"
HISTORY_FILE = "history.jsonl"
_VERSION_DIR_RE = re.compile(r"^version-(\d+)$")
LOCK_WAIT_S = 120.0  # a model's lock: changes take moments, so a longer hold is a stuck process
_HELD = threading.local()  # lock files this thread holds -> depth


def _who() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in a container
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------- the store
class RegistryStore:
    """The model registry under `<root>/models/`; `root=None` means the tracking root."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root: Path = settings.tracking_root(root)
        self.models_dir: Path = self.root / MODELS_DIR

    # ------------------------------------------------------------------ paths and locking
    def _model_dir(self, name: str) -> Path:
        return self.models_dir / validate_model_name(name)

    def _existing_model_dir(self, name: str) -> Path:
        path = self._model_dir(name)
        if not (path / "meta.yaml").is_file():
            raise NotFoundError(
                f"registered model {name!r} does not exist in {self.models_dir}",
                hint="see `mlkit models list`",
            )
        return path

    def _version_dir(self, name: str, version: int) -> Path:
        return self._existing_model_dir(name) / f"version-{version}"

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Hold the model's flock (re-entrant within a thread); LockedError naming the holder when
        it is not free within LOCK_WAIT_S."""
        validate_model_name(name)
        # Re-entrant per thread and lock file, across RegistryStore instances: a second flock on a
        # new descriptor of the same file would wait for ourselves.
        held: dict[str, int] = _HELD.__dict__.setdefault("held", {})
        key = os.path.realpath(self.models_dir / f".{name}.lock")
        if held.get(key):
            held[key] += 1
            try:
                yield
            finally:
                held[key] -= 1
            return
        try:
            self.models_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"{self.models_dir}: cannot lock model {name!r}: {exc}", hint="check the store's permissions"
            ) from exc
        with fsio.locked(
            self.models_dir / f".{name}.lock",
            wait=LOCK_WAIT_S,
            what=f"model {name!r}'s lock in {self.models_dir}",
            hint="a registry change takes moments: check what the holder is doing, then retry",
            mode=0o644,
            other_owners=True,  # a store shared by a team: whoever made the lock file first owns it
        ):
            held[key] = 1
            try:
                yield
            finally:
                held[key] = 0

    def _record(
        self,
        name: str,
        what: str,
        *,
        version: int | None = None,
        from_: Any = None,
        to: Any = None,
        details: dict[str, Any] | None = None,
    ) -> HistoryEntry:
        entry = HistoryEntry(
            when=_now_iso(),
            who=_who(),
            what=what,
            model=name,
            version=version,
            from_=None if from_ is None else str(from_),
            to=None if to is None else str(to),
            details=details or {},
        )
        line = (json.dumps(entry.to_dict(), ensure_ascii=False) + "\n").encode()
        path = self._model_dir(name) / HISTORY_FILE
        try:  # never through a link another user of a shared store planted
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            try:
                files.append_whole(fd, line)  # all of the line or none: no torn line to glue onto
            finally:
                os.close(fd)
        except OSError as exc:
            raise StoreError(
                f"{path}: cannot append to the audit log: {exc}", hint="check permissions"
            ) from exc
        return entry

    # ------------------------------------------------------------------ registered models: read
    def _read_model(self, model_dir: Path, *, with_latest: bool = True) -> RegisteredModel:
        meta = files.read_yaml(model_dir / "meta.yaml")
        aliases = self._read_aliases(model_dir)
        model = RegisteredModel(
            name=str(meta.get("name") or model_dir.name),
            creation_timestamp=int(meta.get("creation_timestamp") or 0),
            last_updated_timestamp=int(meta.get("last_updated_timestamp") or 0),
            description=meta.get("description"),
            tags=files.read_value_dir(model_dir / "tags"),
            aliases=aliases,
        )
        if with_latest:
            model.latest_versions = self._latest_per_stage(self._read_versions(model_dir, aliases))
        return model

    @staticmethod
    def _read_aliases(model_dir: Path) -> dict[str, int]:
        aliases: dict[str, int] = {}
        for alias, text in files.read_value_dir(model_dir / "aliases").items():
            try:
                aliases[alias] = int(text.strip())
            except ValueError:
                continue  # a torn or foreign file: not an alias we can resolve
        return aliases

    def get_registered_model(self, name: str) -> RegisteredModel:
        """A registered model; NotFoundError when missing."""
        return self._read_model(self._existing_model_dir(name))

    def list_registered_models(self) -> list[RegisteredModel]:
        """Every registered model, sorted by name."""
        if not self.models_dir.is_dir():
            return []
        models = []
        for entry in sorted(os.scandir(self.models_dir), key=lambda e: e.name):
            if entry.is_dir() and (Path(entry.path) / "meta.yaml").is_file():
                models.append(self._read_model(Path(entry.path)))
        return models

    # ------------------------------------------------------------------ registered models: write
    def _model_meta(self, model: RegisteredModel) -> dict[str, Any]:
        return {
            "aliases": {alias: str(version) for alias, version in sorted(model.aliases.items())},
            "creation_timestamp": model.creation_timestamp,
            "deployment_job_id": None,
            "deployment_job_state": None,
            "description": model.description,
            "last_updated_timestamp": model.last_updated_timestamp,
            "name": model.name,
            "workspace": "default",
        }

    def _touch_model(self, name: str, when: int | None = None) -> None:
        """Bump last_updated_timestamp and mirror the alias files into meta.yaml (as MLflow does)."""
        model_dir = self._existing_model_dir(name)
        model = self._read_model(model_dir, with_latest=False)
        model.last_updated_timestamp = when or files.now_ms()
        files.write_yaml_atomic(model_dir / "meta.yaml", self._model_meta(model))

    def create_registered_model(
        self, name: str, *, tags: dict[str, Any] | None = None, description: str | None = None
    ) -> RegisteredModel:
        """Create a registered model; InvalidInputError when it exists already."""
        checked_tags = validate_tags(tags)
        with self.lock(name):
            model_dir = self._model_dir(name)
            if (model_dir / "meta.yaml").is_file():
                raise InvalidInputError(
                    f"registered model {name!r} already exists", hint="register a new version of it instead"
                )
            now = files.now_ms()
            model = RegisteredModel(name, now, now, description, tags=checked_tags)
            try:
                model_dir.parent.mkdir(parents=True, exist_ok=True)
                made = not model_dir.exists()
                model_dir.mkdir(exist_ok=True)  # a deleted model's name keeps its history.jsonl
            except OSError as exc:
                raise StoreError(f"{model_dir}: cannot create: {exc}", hint="check permissions") from exc
            with fsio.removed_on_failure(model_dir if made else None):
                for key, value in checked_tags.items():
                    self._write_value(model_dir / "tags" / key, value)
                files.write_yaml_atomic(model_dir / "meta.yaml", self._model_meta(model))
            self._record(
                name, "create_model", to=name, details={"description": description} if description else None
            )
            return model

    def _ensure_model(self, name: str) -> None:
        with self.lock(name):
            if not (self._model_dir(name) / "meta.yaml").is_file():
                self.create_registered_model(name)

    def update_registered_model(self, name: str, description: str | None) -> RegisteredModel:
        """Set a registered model's description."""
        with self.lock(name):
            model_dir = self._existing_model_dir(name)
            model = self._read_model(model_dir, with_latest=False)
            before = model.description
            model.description = description
            model.last_updated_timestamp = files.now_ms()
            files.write_yaml_atomic(model_dir / "meta.yaml", self._model_meta(model))
            self._record(name, "set_description", from_=before, to=description)
        return self.get_registered_model(name)

    def delete_registered_model(self, name: str) -> None:
        """Remove a registered model and all its versions (its audit log is kept beside it)."""
        with self.lock(name):
            model_dir = self._existing_model_dir(name)
            versions = [v.version for v in self._read_versions(model_dir, {})]
            self._record(name, "delete_model", from_=name, details={"versions": versions})
            history = model_dir / HISTORY_FILE
            if history.exists():
                # A file, not a directory: MLflow takes every directory under models/ for a model.
                os.replace(history, self.models_dir / f".{name}.deleted-{files.now_ms()}.history.jsonl")
            try:
                shutil.rmtree(model_dir)
            except OSError as exc:
                raise StoreError(f"{model_dir}: cannot delete: {exc}", hint="check permissions") from exc

    def set_registered_model_tag(self, name: str, key: str, value: Any) -> None:
        """Set a tag on a registered model."""
        text = validate_tag(key, value)
        with self.lock(name):
            model_dir = self._existing_model_dir(name)
            before = self._read_optional(model_dir / "tags" / key)
            self._write_value(model_dir / "tags" / key, text)
            self._touch_model(name)
            self._record(name, "set_tag", from_=before, to=text, details={"key": key})

    def delete_registered_model_tag(self, name: str, key: str) -> None:
        """Delete a tag of a registered model; NotFoundError when it is not set."""
        validate_key(key, "tag")
        with self.lock(name):
            path = self._existing_model_dir(name) / "tags" / key
            before = self._read_optional(path)
            if before is None:
                raise NotFoundError(f"model {name!r} has no tag {key!r}", hint="see `mlkit models show NAME`")
            path.unlink()
            self._touch_model(name)
            self._record(name, "delete_tag", from_=before, details={"key": key})

    # ------------------------------------------------------------------ versions: read
    def _read_version(self, version_dir: Path, aliases: dict[str, int]) -> ModelVersion:
        meta = files.read_yaml(version_dir / "meta.yaml")
        # version_dir was listed because its name matches _VERSION_DIR_RE, so the match is never None
        number = int(meta.get("version") or _VERSION_DIR_RE.match(version_dir.name).group(1))  # type: ignore[union-attr]
        return ModelVersion(
            name=str(meta.get("name") or version_dir.parent.name),
            version=number,
            creation_timestamp=int(meta.get("creation_timestamp") or 0),
            last_updated_timestamp=int(meta.get("last_updated_timestamp") or 0),
            current_stage=str(meta.get("current_stage") or STAGE_NONE),
            description=meta.get("description"),
            source=str(meta.get("source") or ""),
            run_id=meta.get("run_id") or None,
            status=str(meta.get("status") or "READY"),
            tags=files.read_value_dir(version_dir / "tags"),
            aliases=sorted(a for a, v in aliases.items() if v == number),
            storage_location=meta.get("storage_location"),
            run_link=meta.get("run_link"),
            user_id=meta.get("user_id"),
        )

    @staticmethod
    def _version_numbers(model_dir: Path) -> list[int]:
        numbers = []
        try:
            entries = list(os.scandir(model_dir))
        except FileNotFoundError:
            return []
        for entry in entries:
            match = _VERSION_DIR_RE.match(entry.name)
            if match and entry.is_dir():
                numbers.append(int(match.group(1)))
        return sorted(numbers)

    def _read_versions(
        self, model_dir: Path, aliases: dict[str, int], *, include_deleted: bool = False
    ) -> list[ModelVersion]:
        versions = []
        for number in self._version_numbers(model_dir):
            version_dir = model_dir / f"version-{number}"
            try:
                version = self._read_version(version_dir, aliases)
            except FileNotFoundError:
                continue  # a version being created right now (its meta.yaml is not there yet)
            if include_deleted or version.current_stage != STAGE_DELETED_INTERNAL:
                versions.append(version)
        return versions

    @staticmethod
    def _latest_per_stage(versions: list[ModelVersion]) -> list[ModelVersion]:
        latest: dict[str, ModelVersion] = {}
        for version in versions:
            current = latest.get(version.current_stage)
            if current is None or current.version < version.version:
                latest[version.current_stage] = version
        return [latest[stage] for stage in STAGES if stage in latest]

    def list_model_versions(self, name: str) -> list[ModelVersion]:
        """Every live version of a model, oldest first."""
        model_dir = self._existing_model_dir(name)
        return self._read_versions(model_dir, self._read_aliases(model_dir))

    def search_model_versions(
        self, *, run_id: str | None = None, name: str | None = None
    ) -> list[ModelVersion]:
        """Live versions across models, filtered by source run and/or model name."""
        models = [self.get_registered_model(name)] if name else self.list_registered_models()
        found = []
        for model in models:
            for version in self.list_model_versions(model.name):
                if run_id is None or version.run_id == run_id:
                    found.append(version)
        return found

    def referenced_run_ids(self) -> set[str]:
        """Run ids that live model versions point at (gc must keep these runs)."""
        return {v.run_id for v in self.search_model_versions() if v.run_id}

    def get_model_version(self, name: str, version: int | str) -> ModelVersion:
        """One live version; NotFoundError when the model or the version is missing or deleted."""
        number = validate_version(version)
        model_dir = self._existing_model_dir(name)
        version_dir = model_dir / f"version-{number}"
        try:
            found = self._read_version(version_dir, self._read_aliases(model_dir))
        except FileNotFoundError:
            found = None
        if found is None or found.current_stage == STAGE_DELETED_INTERNAL:
            raise NotFoundError(
                f"model {name!r} has no version {number}",
                hint=f"see the versions with `mlkit models show {name}`",
            )
        return found

    def get_latest_versions(self, name: str, stages: list[str] | None = None) -> list[ModelVersion]:
        """The highest version in each of `stages` (all stages when None), as MLflow returns them."""
        wanted = {canonical_stage(s) for s in stages} if stages else set(STAGES)
        return [
            v for v in self._latest_per_stage(self.list_model_versions(name)) if v.current_stage in wanted
        ]

    def get_version_by_stage(self, name: str, stage: str) -> ModelVersion:
        """The highest version in a stage; NotFoundError when the stage is empty."""
        stage = canonical_stage(stage)
        latest = self.get_latest_versions(name, [stage])
        if not latest:
            raise NotFoundError(
                f"model {name!r} has no version in stage {stage}",
                hint=f"move one there: mlkit models transition {name} VERSION {stage}",
            )
        return latest[0]

    def get_latest_version(self, name: str) -> ModelVersion:
        """The highest live version number of a model."""
        versions = self.list_model_versions(name)
        if not versions:
            raise NotFoundError(
                f"model {name!r} has no versions", hint=f"register one: mlkit models register URI {name}"
            )
        return max(versions, key=lambda v: v.version)

    def get_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        """The version an alias points at ('latest' = the highest version); NotFoundError when unset."""
        validate_alias(alias, reserved_ok=True)
        if alias.lower() == "latest":
            return self.get_latest_version(name)
        aliases = self._read_aliases(self._existing_model_dir(name))
        if alias not in aliases:
            raise NotFoundError(
                f"model {name!r} has no alias {alias!r}",
                hint=f"set it: mlkit models alias {name} {alias} VERSION",
            )
        return self.get_model_version(name, aliases[alias])

    def get_model_version_lineage(self, name: str, version: int | str) -> VersionLineage:
        """The version's source run: its params and latest metrics, read from the tracking store."""
        found = self.get_model_version(name, version)
        lineage = VersionLineage(
            name=found.name, version=found.version, source=found.source, run_id=found.run_id
        )
        if not found.run_id:
            return lineage
        try:
            run = FileStore(self.root).get_run(found.run_id)
        except NotFoundError:
            return lineage  # the run was removed (gc) or lives in another store
        lineage.run_found = True
        lineage.experiment_id = run.info.experiment_id
        lineage.run_name = run.info.run_name
        lineage.status = run.info.status
        lineage.params = dict(run.data.params)
        lineage.metrics = dict(run.data.metrics)
        return lineage

    # ------------------------------------------------------------------ versions: write
    def _version_meta(self, version: ModelVersion) -> dict[str, Any]:
        return {
            "creation_timestamp": version.creation_timestamp,
            "current_stage": version.current_stage,
            "deployment_job_state": None,
            "description": version.description,
            "last_updated_timestamp": version.last_updated_timestamp,
            "model_id": None,
            "name": version.name,
            "run_id": version.run_id,
            "run_link": version.run_link,
            "source": version.source,
            "status": version.status,
            "status_message": None,
            "storage_location": version.storage_location,
            "user_id": version.user_id,
            "version": version.version,
            "workspace": "default",
        }

    def _save_version(self, version: ModelVersion) -> None:
        files.write_yaml_atomic(
            self._version_dir(version.name, version.version) / "meta.yaml", self._version_meta(version)
        )

    def create_model_version(
        self,
        name: str,
        source: str,
        *,
        run_id: str | None = None,
        tags: dict[str, Any] | None = None,
        description: str | None = None,
        storage_location: str | None = None,
        create_model: bool = True,
        details: dict[str, Any] | None = None,
    ) -> ModelVersion:
        """Add the next version (max existing + 1, never reused); creates the model when missing."""
        checked_tags = validate_tags(tags)
        with self.lock(name):
            if create_model:
                self._ensure_model(name)
            model_dir = self._existing_model_dir(name)
            number = (self._version_numbers(model_dir) or [0])[-1] + 1
            while True:
                try:
                    (model_dir / f"version-{number}").mkdir()  # exclusive, even against other writers
                    break
                except FileExistsError:
                    number += 1
                except OSError as exc:
                    raise StoreError(
                        f"{model_dir}: cannot create version {number}: {exc}", hint="check permissions"
                    ) from exc
            now = files.now_ms()
            version = ModelVersion(
                name=name,
                version=number,
                creation_timestamp=now,
                last_updated_timestamp=now,
                current_stage=STAGE_NONE,
                description=description,
                source=source,
                run_id=run_id,
                tags=checked_tags,
                storage_location=storage_location or source,
            )
            with fsio.removed_on_failure(model_dir / f"version-{number}"):
                for key, value in checked_tags.items():
                    self._write_value(model_dir / f"version-{number}" / "tags" / key, value)
                self._save_version(version)
            self._touch_model(name, now)
            self._record(name, "create_version", version=number, to=source, details=details)
            return version

    def update_model_version(self, name: str, version: int | str, description: str | None) -> ModelVersion:
        """Set a version's description."""
        with self.lock(name):
            found = self.get_model_version(name, version)
            before = found.description
            found.description = description
            found.last_updated_timestamp = files.now_ms()
            self._save_version(found)
            self._record(name, "set_version_description", version=found.version, from_=before, to=description)
            return found

    def transition_model_version_stage(
        self,
        name: str,
        version: int | str,
        stage: str,
        *,
        archive_existing: bool = False,
        details: dict[str, Any] | None = None,
    ) -> ModelVersion:
        """Move a version to a stage; `archive_existing` moves the stage's other versions to Archived."""
        stage = canonical_stage(stage)
        if archive_existing and stage not in ACTIVE_STAGES:
            raise InvalidInputError(
                f"--archive-existing works only when moving to Staging or Production, not {stage}",
                hint="drop --archive-existing",
            )
        with self.lock(name):
            found = self.get_model_version(name, version)
            now = files.now_ms()
            if archive_existing:
                for other in self.list_model_versions(name):
                    if other.version != found.version and other.current_stage == stage:
                        other.current_stage = STAGE_ARCHIVED
                        other.last_updated_timestamp = now
                        self._save_version(other)
                        self._record(
                            name,
                            "set_stage",
                            version=other.version,
                            from_=stage,
                            to=STAGE_ARCHIVED,
                            details={"reason": f"version {found.version} moved to {stage}"},
                        )
            before = found.current_stage
            found.current_stage = stage
            found.last_updated_timestamp = now
            self._save_version(found)
            self._touch_model(name, now)
            self._record(name, "set_stage", version=found.version, from_=before, to=stage, details=details)
            return found

    def delete_model_version(self, name: str, version: int | str) -> None:
        """Soft-delete a version (stage Deleted_Internal; its number is never reused; aliases dropped)."""
        with self.lock(name):
            found = self.get_model_version(name, version)
            before = found.current_stage
            found.current_stage = STAGE_DELETED_INTERNAL
            found.last_updated_timestamp = files.now_ms()
            self._save_version(found)
            model_dir = self._existing_model_dir(name)
            for alias in found.aliases:
                try:
                    (model_dir / "aliases" / alias).unlink()
                except FileNotFoundError:
                    pass
            self._touch_model(name, found.last_updated_timestamp)
            self._record(
                name,
                "delete_version",
                version=found.version,
                from_=before,
                details={"aliases": found.aliases},
            )

    def set_model_version_tag(self, name: str, version: int | str, key: str, value: Any) -> None:
        """Set a tag on a version."""
        text = validate_tag(key, value)
        with self.lock(name):
            found = self.get_model_version(name, version)
            path = self._version_dir(name, found.version) / "tags" / key
            before = self._read_optional(path)
            self._write_value(path, text)
            self._touch_model(name)
            self._record(
                name, "set_version_tag", version=found.version, from_=before, to=text, details={"key": key}
            )

    def delete_model_version_tag(self, name: str, version: int | str, key: str) -> None:
        """Delete a version's tag; NotFoundError when it is not set."""
        validate_key(key, "tag")
        with self.lock(name):
            found = self.get_model_version(name, version)
            path = self._version_dir(name, found.version) / "tags" / key
            before = self._read_optional(path)
            if before is None:
                raise NotFoundError(f"model {name!r} version {found.version} has no tag {key!r}", hint="")
            path.unlink()
            self._touch_model(name)
            self._record(
                name, "delete_version_tag", version=found.version, from_=before, details={"key": key}
            )

    # ------------------------------------------------------------------ aliases
    def set_alias(
        self, name: str, alias: str, version: int | str, *, details: dict[str, Any] | None = None
    ) -> ModelVersion:
        """Point an alias at a live version (moving it if it pointed elsewhere)."""
        validate_alias(alias)
        with self.lock(name):
            found = self.get_model_version(name, version)
            model_dir = self._existing_model_dir(name)
            before = self._read_aliases(model_dir).get(alias)
            self._write_value(model_dir / "aliases" / alias, str(found.version))
            self._touch_model(name)
            self._record(
                name,
                "set_alias",
                version=found.version,
                from_=before,
                to=found.version,
                details={"alias": alias, **(details or {})},
            )
            found.aliases = sorted({*found.aliases, alias})
            return found

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove an alias; NotFoundError when it is not set."""
        validate_alias(alias, reserved_ok=True)
        with self.lock(name):
            model_dir = self._existing_model_dir(name)
            before = self._read_aliases(model_dir).get(alias)
            if before is None:
                raise NotFoundError(
                    f"model {name!r} has no alias {alias!r}", hint=f"see `mlkit models show {name}`"
                )
            (model_dir / "aliases" / alias).unlink()
            self._touch_model(name)
            self._record(name, "delete_alias", version=before, from_=before, details={"alias": alias})

    # ------------------------------------------------------------------ audit log
    def record_event(
        self,
        name: str,
        what: str,
        *,
        version: int | None = None,
        from_: Any = None,
        to: Any = None,
        details: dict[str, Any] | None = None,
    ) -> HistoryEntry:
        """Append an entry that is not a registry change (e.g. a server swapping versions) to the
        model's audit log."""
        with self.lock(name):
            self._existing_model_dir(name)
            return self._record(name, what, version=version, from_=from_, to=to, details=details)

    def history(self, name: str) -> list[HistoryEntry]:
        """The audit log of a model, oldest first, including the logs of earlier deleted models of that name."""
        validate_model_name(name)
        paths: list[Path] = []
        if self.models_dir.is_dir():
            prefix, suffix = f".{name}.deleted-", ".history.jsonl"
            archived = []
            for entry in os.scandir(self.models_dir):
                if entry.name.startswith(prefix) and entry.name.endswith(suffix):
                    stamp = entry.name[len(prefix) : -len(suffix)]
                    if stamp.isdigit():
                        archived.append((int(stamp), Path(entry.path)))
            paths = [p for _, p in sorted(archived)]
        current = self._model_dir(name) / HISTORY_FILE
        exists = (self._model_dir(name) / "meta.yaml").is_file()
        if current.is_file():
            paths.append(current)
        if not paths and not exists:
            raise NotFoundError(
                f"registered model {name!r} does not exist and has no history", hint="see `mlkit models list`"
            )
        entries = []
        for path in paths:
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    data = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line
                if isinstance(data, dict):
                    entries.append(HistoryEntry.from_dict(data))
        return entries

    # ------------------------------------------------------------------ small file helpers
    @staticmethod
    def _write_value(path: Path, value: str) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{path.parent}: cannot create: {exc}", hint="check permissions") from exc
        # the temp file goes beside tags/ or aliases/ (in the model or version directory, which
        # holds meta.yaml), never among the keys that MLflow and mlkit list
        holder = next(
            (
                p.parent
                for p in path.parents
                if p.name in ("tags", "aliases") and (p.parent / "meta.yaml").is_file()
            ),
            None,
        )
        files.write_atomic(path, value, tmp_dir=holder)

    @staticmethod
    def _read_optional(path: Path) -> str | None:
        try:
            return files.read_value(path)
        except (FileNotFoundError, IsADirectoryError):
            return None
