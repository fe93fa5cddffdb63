"""Find and parse an MLproject file (MLflow's format), validating the whole document at once."""

from __future__ import annotations

import difflib
import os
import shlex
from pathlib import Path
from typing import Any

from mlkit.env.ref import EnvRef
from mlkit.errors import ProjectError
from mlkit.project.command import check_template, valid_param_name
from mlkit.project.model import PARAM_TYPES, EntryPoint, Parameter, Project, display_path
from mlkit.project.values import check_value

TOP_KEYS = ("name", "conda_env", "python_env", "docker_env", "entry_points")
ENTRY_KEYS = ("command", "parameters")
PARAM_KEYS = ("type", "default")
DOCKER_KEYS = ("image", "volumes", "environment")
SCRIPT_RUNNERS = {".py": "python", ".sh": None}  # None: $SHELL, else bash (as MLflow)


class _Problems:
    """Collects every problem in one document so the user sees them all in one go."""

    def __init__(self, label: str):
        self.label = label
        self.items: list[tuple[str, str]] = []

    def add(self, key: str, what: str, hint: str) -> None:
        self.items.append((f"{self.label}: {key}: {what}" if key else f"{self.label}: {what}", hint))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        hints = list(dict.fromkeys(hint for _, hint in self.items))
        raise ProjectError("; ".join(m for m, _ in self.items), hint="; ".join(hints))


def _did_you_mean(word: str, choices: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def find_mlproject(directory: Path) -> Path | None:
    """The MLproject file in `directory`: the first entry named `mlproject`, any case, no extension."""
    for entry in sorted(os.listdir(directory)):
        if entry.lower() == "mlproject" and (directory / entry).is_file():
            return directory / entry
    return None


def _read_yaml(path: Path, label: str) -> Any:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProjectError(
            f"{label}: cannot read the file: {exc}", hint="check its permissions and encoding (UTF-8)"
        ) from exc
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context = getattr(exc, "context", None)
        detail = f"{problem} ({context})" if context else problem
        raise ProjectError(
            f"{label}: {where}invalid YAML: {detail}",
            hint="fix the YAML at that line (indent with spaces, quote values that contain ': ' or '#')",
        ) from exc


def load_project(path: Path | str) -> Project:
    """Load the project in directory `path`; a directory without an MLproject is a valid project."""
    directory = Path(path).absolute()
    if directory.is_file() and directory.name.lower() == "mlproject":  # the MLproject file itself
        directory = directory.parent
    if not directory.is_dir():
        raise ProjectError(
            f"{display_path(directory)}: not a directory",
            hint="pass the project directory (the one holding MLproject), e.g. mlkit run projects/cnn",
        )
    file = find_mlproject(directory)
    if file is None:
        return Project(directory.name, directory, None, _default_env(directory), {})
    label = display_path(file)
    doc = _read_yaml(file, label)
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ProjectError(
            f"{label}: the file must be a YAML mapping (name:, entry_points:, ...), not a {type(doc).__name__}",
            hint="see MLproject.example at the root of the mlkit repository",
        )
    problems = _Problems(label)
    for key in doc:
        if key == "databricks_spark_job":
            problems.add(
                str(key),
                "Databricks jobs are not supported by mlkit",
                "remove the key and declare entry_points",
            )
        elif key not in TOP_KEYS:
            problems.add(
                str(key),
                f"unknown key{_did_you_mean(str(key), TOP_KEYS)}",
                f"top-level keys are: {', '.join(TOP_KEYS)}",
            )
    name = doc.get("name")
    if name is not None and not isinstance(name, (str, int, float)):
        problems.add("name", f"must be a string, not a {type(name).__name__}", "write name: my-project")
    env = _parse_env(doc, directory, problems)
    entry_points = _parse_entry_points(doc.get("entry_points"), directory, label, problems)
    problems.raise_if_any()
    return Project(str(name) if name is not None else directory.name, directory, file, env, entry_points)


def _default_env(directory: Path) -> EnvRef | None:
    for filename, kind in (("python_env.yaml", "python"), ("conda.yaml", "conda")):
        if (directory / filename).is_file():
            return EnvRef(kind=kind, path=(directory / filename).resolve())  # type: ignore[arg-type]
    return None


def _parse_env(doc: dict, directory: Path, problems: _Problems) -> EnvRef | None:
    present = [key for key in ("conda_env", "python_env", "docker_env") if key in doc]
    if len(present) > 1:
        problems.add(
            "",
            f"more than one environment: {', '.join(present)}",
            "keep exactly one of conda_env, python_env, docker_env",
        )
        return None
    if not present:
        return _default_env(directory)
    key = present[0]
    value = doc[key]
    if key == "docker_env":
        return _parse_docker(value, problems)
    if not isinstance(value, str) or not value.strip():
        problems.add(key, "must be a file name relative to the project directory", f"write {key}: conda.yaml")
        return None
    env_path = (directory / value).resolve()
    if not env_path.is_file():
        problems.add(key, f"file {value!r} not found in {directory}", f"create {value} or fix the file name")
        return None
    return EnvRef(kind="conda" if key == "conda_env" else "python", path=env_path)


def _parse_docker(value: Any, problems: _Problems) -> EnvRef | None:
    if not isinstance(value, dict):
        problems.add(
            "docker_env", "must be a mapping with an image", "write docker_env: {image: my-image:tag}"
        )
        return None
    ok = True
    for key in value:
        if key not in DOCKER_KEYS:
            ok = False
            problems.add(
                f"docker_env.{key}",
                f"unknown key{_did_you_mean(str(key), DOCKER_KEYS)}",
                f"docker_env keys are: {', '.join(DOCKER_KEYS)}",
            )
    image = value.get("image")
    if not isinstance(image, str) or not image:
        ok = False
        problems.add("docker_env.image", "missing or empty", "write docker_env: {image: my-image:tag}")
    volumes = value.get("volumes")
    if volumes and not (isinstance(volumes, list) and all(isinstance(v, str) for v in volumes)):
        ok = False
        problems.add(
            "docker_env.volumes", "must be a list of strings", 'write volumes: ["/host/path:/container/path"]'
        )
    environment = value.get("environment")
    if environment and not (
        isinstance(environment, list)
        and all(isinstance(v, str) or (isinstance(v, list) and len(v) == 2) for v in environment)
    ):
        ok = False
        problems.add(
            "docker_env.environment",
            "must be a list of variable names or [NAME, value] pairs",
            'write environment: [["NEW_VAR", "value"], "VAR_TO_COPY"]',
        )
    return EnvRef(kind="docker", image=image, docker=dict(value)) if ok else None


def _parse_entry_points(raw: Any, directory: Path, label: str, problems: _Problems) -> dict[str, EntryPoint]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.add(
            "entry_points",
            "must be a mapping of entry point names",
            "write entry_points: {main: {command: python train.py}}",
        )
        return {}
    entry_points: dict[str, EntryPoint] = {}
    for ep_name, spec in raw.items():
        key = f"entry_points.{ep_name}"
        if not isinstance(spec, dict):
            problems.add(
                key, "must be a mapping with a command", f"write {ep_name}: {{command: python train.py}}"
            )
            continue
        for ep_key in spec:
            if ep_key not in ENTRY_KEYS:
                problems.add(
                    f"{key}.{ep_key}",
                    f"unknown key{_did_you_mean(str(ep_key), ENTRY_KEYS)}",
                    "entry point keys are: command, parameters",
                )
        command = spec.get("command")
        if not isinstance(command, str) or not command.strip():
            problems.add(
                f"{key}.command", "missing or not a string", 'write command: "python train.py --lr {lr}"'
            )
            continue
        parameters = _parse_parameters(spec.get("parameters"), key, problems)
        for where, what, hint in check_template(command, parameters):
            problems.add(f"{key}.command", what if not where else f"{where}: {what}", hint)
        entry_points[str(ep_name)] = EntryPoint(str(ep_name), command, parameters, directory, label)
    return entry_points


def _parse_parameters(raw: Any, key: str, problems: _Problems) -> dict[str, Parameter]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.add(
            f"{key}.parameters",
            "must be a mapping of parameter names",
            "write parameters: {lr: {type: float, default: 0.1}}",
        )
        return {}
    params: dict[str, Parameter] = {}
    for name, spec in raw.items():
        pkey = f"{key}.parameters.{name}"
        param = _parse_parameter(str(name), spec, pkey, problems)
        if param is not None:
            params[str(name)] = param
    return params


def _parse_parameter(name: str, spec: Any, pkey: str, problems: _Problems) -> Parameter | None:
    if not valid_param_name(name):
        problems.add(
            pkey,
            "this parameter name cannot be logged (MLflow's rule)",
            "use letters, digits, _ - . / : and spaces",
        )
        return None
    if spec is None:  # `lr:` with nothing after it: a required string
        return Parameter(name)
    if isinstance(spec, str):  # `lr: float` -- the type, required
        ptype, default = spec, None
    elif isinstance(spec, bool):
        ptype, default = "string", spec
    elif isinstance(spec, int):  # a bare default: `epochs: 10`
        ptype, default = "int", spec
    elif isinstance(spec, float):
        ptype, default = "float", spec
    elif isinstance(spec, dict):
        for k in spec:
            if k not in PARAM_KEYS:
                problems.add(
                    f"{pkey}.{k}",
                    f"unknown key{_did_you_mean(str(k), PARAM_KEYS)}",
                    "parameter keys are: type, default",
                )
        ptype, default = spec.get("type", "string"), spec.get("default")
    else:
        problems.add(
            pkey,
            f"must be a type name or a mapping, not a {type(spec).__name__}",
            f"write {name}: {{type: float, default: 0.1}}",
        )
        return None
    if not isinstance(ptype, str) or ptype not in PARAM_TYPES:
        extra = " (to give a default write {default: ...})" if isinstance(spec, str) else ""
        problems.add(
            pkey,
            f"unknown type {ptype!r}{_did_you_mean(str(ptype), PARAM_TYPES)}{extra}",
            f"use one of {', '.join(PARAM_TYPES)}",
        )
        return None
    if isinstance(default, (dict, list)):
        problems.add(
            f"{pkey}.default",
            f"must be a single value, not a {type(default).__name__}",
            f"write default: 0.1 (a {ptype})",
        )
        return None
    text = None if default is None else str(default)
    if text is not None and ptype in ("int", "float", "uri"):
        error = check_value(ptype, text)
        if error:
            problems.add(f"{pkey}.default", error, f"make the default a valid {ptype}")
            return None
    return Parameter(name, ptype, text)


def script_entry_point(project: Project, name: str) -> EntryPoint | None:
    """A `.py` or `.sh` file in the project used as an entry point (MLflow's rule), or None."""
    suffix = Path(name).suffix
    if suffix not in SCRIPT_RUNNERS or not (project.directory / name).is_file():
        return None
    runner = SCRIPT_RUNNERS[suffix] or os.environ.get("SHELL") or "bash"
    command = f"{shlex.quote(runner)} {shlex.quote(name)}".replace("{", "{{").replace("}", "}}")
    source = display_path(project.file) if project.file else display_path(project.directory)
    return EntryPoint(name, command, {}, project.directory, source, script=True)
