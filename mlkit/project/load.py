"""Find and parse an MLproject file (MLflow's format), validating the whole document at once."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from mlkit.env.ref import EnvKind, EnvRef
from mlkit.errors import NotFoundError, ProjectError
from mlkit.project.command import check_template, valid_param_name
from mlkit.project.model import (
    PARAM_TYPES,
    SCRIPT_RUNNERS,
    EntryPoint,
    Parameter,
    Project,
    clip,
    display_path,
    problems_error,
)
from mlkit.project.names import typo_of
from mlkit.project.values import check_value
from mlkit.yamlsafe import load_yaml

TOP_KEYS = ("name", "conda_env", "python_env", "docker_env", "entry_points")
ENTRY_KEYS = ("command", "parameters")
PARAM_KEYS = ("type", "default")
DOC_KEYS = ("description",)  # documentation: read by people, ignored by MLflow and mlkit
DOCKER_KEYS = ("image", "volumes", "environment")
# Other tools' keys seen in real MLproject files: MLflow ignores them, so mlkit warns and goes on.
OTHER_TOOLS = (
    "hooks", "signature", "target", "meta_data", "user_options", "adapters", "renv_env", "kubernetes_env",
    "docker_env.build_context", "docker_env.namespace", "docker_env.registry", "docker_env.run_args",
)  # fmt: skip
TYPE_ALIASES = {"str": "string"}  # MLflow's own Projects guide writes `type: str`
# Types MLflow does not list but real files use: MLflow passes the value as text, so does mlkit.
_FOREIGN_TYPE = re.compile(
    r"(bool|boolean|integer|number|double|long|text|choice|json|list|dict|tuple|array|any|object|"
    r"(list|dict|tuple|set|array|optional|sequence)\[.*\])",
    re.IGNORECASE,
)
Problem = tuple[str, str, str]  # (key path, what is wrong, how to fix it)


class _Problems:
    """Problems (errors) and warnings of one part of a document: the top level or one entry point."""

    def __init__(self, label: str):
        self.label = label
        self.items: list[Problem] = []
        self.warnings: list[str] = []

    def add(self, key: str, what: str, hint: str) -> None:
        self.items.append((key, what, hint))

    def warn(self, key: str, what: str) -> None:
        self.warnings.append(clip(f"{self.label}: {key}: {what}" if key else f"{self.label}: {what}"))


def _did_you_mean(word: str, choices: tuple[str, ...] | list[str]) -> str:
    import difflib  # import budget: difflib loads only to suggest a fix for a typo

    close = typo_of(word, choices) or next(iter(difflib.get_close_matches(word, list(choices), n=1)), None)
    return f" (did you mean {close!r}?)" if close else ""


def _unknown_key(problems: _Problems, key: str, name: str, known: tuple[str, ...], where: str) -> None:
    """An unknown key: a typo of a known key is an error (MLflow would silently drop what it
    holds), any other word a warning (MLflow ignores it, and so does mlkit)."""
    typo = typo_of(name, known)
    if typo is not None:
        problems.add(key, f"unknown key (did you mean {typo!r}?)", f"{where} keys are: {', '.join(known)}")
    elif f"{key.split('.', 1)[0]}.{name}" in OTHER_TOOLS or name in OTHER_TOOLS:
        problems.warn(key, "another tool's key, ignored (as MLflow does)")
    else:
        problems.warn(key, f"unknown key, ignored (as MLflow does; {where} keys are: {', '.join(known)})")


def find_mlproject(directory: Path) -> Path | None:
    """The MLproject file in `directory`: the first entry named `mlproject`, any case, no extension."""
    for entry in sorted(os.listdir(directory)):
        if entry.lower() == "mlproject" and (directory / entry).is_file():
            return directory / entry
    return None


def _read_yaml(path: Path, label: str) -> Any:
    return load_yaml(path, label, ProjectError)


def load_project(path: Path | str, entry_point: str | None = None) -> Project:
    """Load the project in directory `path`; a directory without an MLproject is a valid project.

    The file's top level must be valid. With `entry_point=None` every entry point must be valid
    too; with a name, only that one: the others' problems become warnings and selecting one of
    them raises its error (MLflow fails only the entry point that is broken)."""
    return _load(path, entry_point, strict=entry_point is None)


def survey_project(path: Path | str) -> Project:
    """Load the project, raising only for problems at the file's top level; entry points that
    cannot run are in `Project.broken` (with the error that selecting them raises)."""
    return _load(path, None, strict=False)


# The whole load in the order a reader checks a file: find it, read it, the top level, then the
# entry points, collecting every problem before deciding which are errors for this entry point.
def _load(path: Path | str, entry_point: str | None, strict: bool) -> Project:  # noqa: C901
    directory = Path(path).absolute()
    if directory.is_file() and directory.name.lower() == "mlproject":  # the MLproject file itself
        directory = directory.parent
    if not directory.exists():  # exit 66 like every "does not exist" (docs/exit-codes.md)
        raise NotFoundError(
            f"{display_path(directory)}: no such directory",
            hint="pass the project directory (the one holding MLproject), e.g. mlkit run projects/cnn",
        )
    if not directory.is_dir():
        script = directory.suffix in SCRIPT_RUNNERS
        raise ProjectError(
            f"{display_path(directory)}: not a directory",
            hint=f"a script is an entry point of its folder: mlkit run {display_path(directory.parent)} -e {directory.name}"
            if script
            else "pass the project directory (the one holding MLproject), e.g. mlkit run projects/cnn",
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
    top = _Problems(label)
    for key in doc:
        if key == "databricks_spark_job":
            top.add(
                str(key),
                "Databricks jobs are not supported by mlkit",
                "remove the key and declare entry_points",
            )
        elif key not in TOP_KEYS:
            _unknown_key(top, _short(str(key)), str(key), TOP_KEYS, "top-level")
    name = doc.get("name")
    if name is not None and not isinstance(name, (str, int, float)):
        top.add("name", f"must be a string, not a {type(name).__name__}", "write name: my-project")
    env = _parse_env(doc, directory, top)
    raw = doc.get("entry_points")
    if raw is not None and not isinstance(raw, dict):
        top.add(
            "entry_points",
            "must be a mapping of entry point names",
            "write entry_points: {main: {command: python train.py}}",
        )
        raw = None
    entry_points: dict[str, EntryPoint] = {}
    entry_warnings: dict[str, tuple[str, ...]] = {}
    broken: dict[str, ProjectError] = {}
    fatal = list(top.items)  # the top level, plus every entry point that must be valid
    for ep_name, spec in (raw or {}).items():
        ep_name = str(ep_name)
        problems = _Problems(label)
        entry = _parse_entry_point(ep_name, spec, directory, label, problems)
        entry_warnings[ep_name] = tuple(problems.warnings)
        if problems.items:
            what = f" in entry point {_short(ep_name)!r}"
            broken[ep_name] = problems_error(label, problems.items, what)
            if strict or ep_name == entry_point:
                fatal += problems.items
        elif entry is not None:
            entry_points[ep_name] = entry
    if fatal:
        raise problems_error(label, fatal)
    return Project(
        str(name) if name is not None else directory.name,
        directory,
        file,
        env,
        entry_points,
        warnings=tuple(top.warnings),
        entry_warnings=entry_warnings,
        broken=broken,
    )


def _default_env(directory: Path) -> EnvRef | None:
    defaults: tuple[tuple[str, EnvKind], ...] = (("python_env.yaml", "python"), ("conda.yaml", "conda"))
    for filename, kind in defaults:
        path = directory / filename
        if path.is_file():
            return EnvRef(kind=kind, path=path.resolve())
        if os.path.lexists(path):  # a FIFO, a device, a dangling link: not "no environment file"
            raise ProjectError(
                f"{display_path(path)}: not a regular file, so it cannot be the project's environment",
                hint=f"make {filename} a plain file, or remove it to run without an environment file",
            )
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
    if not present or doc[present[0]] in (None, ""):  # `conda_env: ~`: none named, look as MLflow does
        return _default_env(directory)
    key = present[0]
    value = doc[key]
    if key == "docker_env":
        return _parse_docker(value, problems)
    if not isinstance(value, str) or not value.strip():
        problems.add(key, "must be a file name relative to the project directory", f"write {key}: conda.yaml")
        return None
    if "\x00" in value or len(value) > 1024:
        what = "contains a NUL byte" if "\x00" in value else f"is {len(value)} characters long"
        problems.add(key, f"the file name {what}", f"write {key}: conda.yaml")
        return None
    try:
        env_path = (directory / value).resolve()
        found = env_path.is_file()
    except (OSError, ValueError) as exc:
        problems.add(key, f"file {value[:80]!r} cannot be used: {getattr(exc, 'strerror', None) or exc}",
                     f"write {key}: conda.yaml")  # fmt: skip
        return None
    if not found:
        problems.add(
            key, f"file {value[:80]!r} not found in {directory}", f"create {value[:80]} or fix the file name"
        )
        return None
    return EnvRef(kind="conda" if key == "conda_env" else "python", path=env_path)


def _parse_docker(value: Any, problems: _Problems) -> EnvRef | None:
    if not isinstance(value, dict):
        problems.add(
            "docker_env", "must be a mapping with an image", "write docker_env: {image: my-image:tag}"
        )
        return None
    before = len(problems.items)
    for key in value:
        if key not in DOCKER_KEYS:
            _unknown_key(problems, f"docker_env.{key}", str(key), DOCKER_KEYS, "docker_env")
    image = value.get("image")
    if not isinstance(image, str) or not image:
        problems.add("docker_env.image", "missing or empty", "write docker_env: {image: my-image:tag}")
    elif image.startswith("-") or any(c.isspace() or not c.isprintable() for c in image):
        # the engine would read it as one of its own flags (`--help` ran as the run), or fail on it
        problems.add("docker_env.image", f"{clip(repr(image), 80)} is not an image name",
                     "write docker_env: {image: my-image:tag} (no leading '-', no spaces)")  # fmt: skip
    volumes = value.get("volumes")
    if volumes and not (isinstance(volumes, list) and all(isinstance(v, str) for v in volumes)):
        problems.add(
            "docker_env.volumes", "must be a list of strings", 'write volumes: ["/host/path:/container/path"]'
        )
    elif volumes:
        for volume in volumes:
            if not volume or volume.startswith("-") or not volume.isprintable():
                problems.add("docker_env.volumes", f"{clip(repr(volume), 80)} is not a volume",
                             'write volumes: ["/host/path:/container/path"]')  # fmt: skip
    environment = value.get("environment")
    if environment and not (
        isinstance(environment, list)
        and all(isinstance(v, str) or (isinstance(v, list) and len(v) == 2) for v in environment)
    ):
        problems.add(
            "docker_env.environment",
            "must be a list of variable names or [NAME, value] pairs",
            'write environment: [["NEW_VAR", "value"], "VAR_TO_COPY"]',
        )
    elif environment:
        for entry in environment:
            _check_variable(entry, problems)
    ok = len(problems.items) == before
    return EnvRef(kind="docker", image=image, docker=dict(value)) if ok else None


def _check_variable(entry: str | list, problems: _Problems) -> None:
    """One docker_env.environment entry: a name the engine can set (non-empty, no `=`: `-e A=B=c`
    would set A), and a value that is text, a number or a boolean (`null` would reach the
    container as the word None); no control character in a name, no NUL byte in a value."""
    name, val = (entry, "") if isinstance(entry, str) else entry
    hint = 'write environment: [["NEW_VAR", "value"], "VAR_TO_COPY"]'
    if not isinstance(name, str) or not name or "=" in name or not name.isprintable():
        problems.add("docker_env.environment", f"{clip(repr(name), 80)} is not a variable name", hint)
    elif isinstance(val, (dict, list)) or val is None:
        problems.add("docker_env.environment", f"{name}: the value must be text or a number, "
                     f"not {'null' if val is None else type(val).__name__}", hint)  # fmt: skip
    elif "\x00" in str(val):
        problems.add("docker_env.environment", f"{name}: the value contains a NUL byte", hint)


def _parse_entry_point(
    ep_name: str, spec: Any, directory: Path, label: str, problems: _Problems
) -> EntryPoint | None:
    key = f"entry_points.{ep_name}"
    if not isinstance(spec, dict):
        problems.add(
            key, "must be a mapping with a command", f"write {ep_name}: {{command: python train.py}}"
        )
        return None
    for ep_key in spec:
        if ep_key not in ENTRY_KEYS and ep_key not in DOC_KEYS:
            _unknown_key(problems, f"{key}.{ep_key}", str(ep_key), ENTRY_KEYS, "entry point")
    command = spec.get("command")
    parameters, declared = _parse_parameters(spec.get("parameters"), key, problems)
    if not isinstance(command, str) or not command.strip():
        problems.add(
            f"{key}.command", "missing or not a string", 'write command: "python train.py --lr {lr}"'
        )
        return None
    # A parameter already reported as broken is declared: do not report its use again.
    for where, what, hint in check_template(command, parameters, declared=declared):
        problems.add(f"{key}.command", what if not where else f"{where}: {what}", hint)
    return EntryPoint(ep_name, command, parameters, directory, label)


def _parse_parameters(raw: Any, key: str, problems: _Problems) -> tuple[dict[str, Parameter], set[str]]:
    if raw is None:  # `parameters:` left empty: none (MLflow crashes on it)
        return {}, set()
    if not isinstance(raw, dict):
        problems.add(
            f"{key}.parameters",
            "must be a mapping of parameter names",
            "write parameters: {lr: {type: float, default: 0.1}}",
        )
        return {}, set()
    params: dict[str, Parameter] = {}
    for name, spec in raw.items():
        pkey = f"{key}.parameters.{_short(str(name))}"
        param = _parse_parameter(str(name), spec, pkey, problems)
        if param is not None:
            params[str(name)] = param
    return params, {str(n) for n in raw}


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _param_type(ptype: Any, pkey: str, problems: _Problems, shorthand: bool) -> str | None:
    """The parameter type `ptype` names, a warning for a type MLflow does not list (run as a
    string, as MLflow does), or None after an error (a typo of a type, a default written as a type)."""
    if isinstance(ptype, str) and ptype in PARAM_TYPES:
        return ptype
    if isinstance(ptype, str) and ptype in TYPE_ALIASES:
        return TYPE_ALIASES[ptype]
    shown = _short(repr(ptype), 40)
    typo = typo_of(ptype, PARAM_TYPES) if isinstance(ptype, str) and ptype.isidentifier() else None
    if isinstance(ptype, str) and typo is None and (not shorthand or _FOREIGN_TYPE.fullmatch(ptype.strip())):
        problems.warn(pkey, f"type {shown} is not an MLflow type: the value is passed as text, unchecked")
        return "string"
    if typo is not None:
        problems.add(
            pkey, f"unknown type {shown} (did you mean {typo!r}?)", f"use one of {', '.join(PARAM_TYPES)}"
        )
    elif shorthand:  # `who: world`: MLflow reads 'world' as a type and drops the default
        problems.add(
            pkey,
            f"unknown type {shown} (to give a default write {{default: ...}})",
            f"write {{type: string, default: {_short(str(ptype), 40)}}}, or use one of {', '.join(PARAM_TYPES)}",
        )
    else:
        problems.add(pkey, f"type must be a type name, not {shown}", f"use one of {', '.join(PARAM_TYPES)}")
    return None


# One branch per form MLflow accepts for a parameter (shorthand type, mapping, flow map typos,
# defaults of each type), each reporting its own problem once: the list of forms is the point.
def _parse_parameter(name: str, spec: Any, pkey: str, problems: _Problems) -> Parameter | None:  # noqa: C901
    if not valid_param_name(name):
        problems.add(
            pkey,
            "this parameter name cannot be logged (MLflow's rule)",
            "use letters, digits, _ - . / : and spaces",
        )
        return None
    if spec is None and ":" in name:  # `{lr:0.1}`: YAML reads one key, MLflow a required string
        problems.add(
            pkey,
            "missing space after ':' (YAML reads this as one name with no value)",
            f"write {name.split(':', 1)[0]}: {name.split(':', 1)[1]}",
        )
        return None
    if spec is None:  # `lr:` with nothing after it: a required string
        return Parameter(name)
    default: Any  # YAML's value: checked below
    if isinstance(spec, str):  # `lr: float` -- the type, required
        ptype, default, shorthand = spec, None, True
    elif isinstance(spec, bool):
        ptype, default, shorthand = "string", spec, False
    elif isinstance(spec, int):  # a bare default: `epochs: 10`
        ptype, default, shorthand = "int", spec, False
    elif isinstance(spec, float):
        ptype, default, shorthand = "float", spec, False
    elif isinstance(spec, dict):
        bad = len(problems.items)
        for k in spec:
            if k in PARAM_KEYS or k in DOC_KEYS:
                continue
            head, sep, rest = str(k).replace("=", ":", 1).partition(":")
            if sep and typo_of(head.strip(), PARAM_KEYS) and spec[k] is None:
                op = "=" if "=" in str(k)[: len(head) + 1] else ":"
                what = "missing space after ':'" if op == ":" else "'=' where YAML needs ': '"
                problems.add(f"{pkey}.{_short(str(k), 40)}", f"{what}: MLflow would drop this value",
                             f"write {{{head.strip()}: {_short(rest.strip(), 40)}}}")  # fmt: skip
            else:
                _unknown_key(problems, f"{pkey}.{_short(str(k), 40)}", str(k), PARAM_KEYS, "parameter")
        if len(problems.items) > bad:
            return None
        ptype, default, shorthand = spec.get("type", "string"), spec.get("default"), False
    else:
        problems.add(
            pkey,
            f"must be a type name or a mapping, not a {type(spec).__name__}",
            f"write {name}: {{type: float, default: 0.1}}",
        )
        return None
    checked = _param_type(ptype, pkey, problems, shorthand)
    if checked is None:
        return None
    ptype = checked
    if isinstance(default, (dict, list)):
        problems.add(
            f"{pkey}.default",
            f"must be a single value, not a {type(default).__name__} (MLflow would pass its Python text)",
            'write the value as text, e.g. default: "1,2", and split it in the program',
        )
        return None
    text = None if default is None else str(default)
    if text is not None and ptype in ("int", "float", "uri"):
        error = check_value(ptype, text)
        if error and text in ("None", "none", "null", "Null", "NULL"):
            problems.add(
                f"{pkey}.default",
                f"{text!r} is not a{'n' if ptype == 'int' else ''} {ptype} (YAML reads {text} as text)",
                "remove `default:` to make the parameter required, or give a real value",
            )
            return None
        if error:
            problems.add(f"{pkey}.default", _short(error, 120), f"make the default a valid {ptype}")
            return None
    return Parameter(name, ptype, text)
