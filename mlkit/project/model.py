"""The frozen dataclasses an MLproject is parsed into (`Project`, `EntryPoint`, `Parameter`),
and the helpers its messages share.

Above mlkit.project.command (an entry point resolves through it) and below mlkit.project.load
(which builds these); a script entry point (`-e train.py`) is made here, from the file alone.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from mlkit.env.ref import EnvRef
from mlkit.errors import ProjectError
from mlkit.project.command import ResolvedCommand, resolve_entry_point

PARAM_TYPES = ("string", "float", "int", "path", "uri")
SCRIPT_RUNNERS = {".py": "python", ".sh": None}  # None: $SHELL, else bash (as MLflow)
MAX_LISTED = 10  # problems listed one per line in an error; the rest are counted
MAX_LINE = 200  # characters in one listed problem or warning


def clip(text: str, limit: int = MAX_LINE) -> str:
    """`text` cut to `limit` characters (with an ellipsis), so no message grows with the input."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


class ProjectProblems(ProjectError):
    """Several problems in one MLproject: `message` is one header line naming the file, `details`
    one short line per problem (key path, what is wrong, how to fix it), at most MAX_LISTED."""

    def __init__(self, message: str, hint: str | None, details: list[str]):
        super().__init__(message, hint)
        self.details = details


def problems_error(label: str, items: list[tuple[str, str, str]], what: str = "") -> ProjectError:
    """The error for `items` (key path, what is wrong, fix): one line with a hint when there is one
    problem; else a header line and one line per problem (MAX_LISTED, then a count)."""
    items = list(dict.fromkeys(items))
    if len(items) == 1:
        key, problem, fix = items[0]
        return ProjectError(
            clip(f"{label}: {key}: {problem}" if key else f"{label}: {problem}", 2 * MAX_LINE), fix
        )
    lines = [
        clip(f"{key}: {problem} (fix: {fix})" if key else f"{problem} (fix: {fix})")
        for key, problem, fix in items
    ]
    if len(lines) > MAX_LISTED:
        lines = [*lines[:MAX_LISTED], f"... and {len(lines) - MAX_LISTED} more"]
    return ProjectProblems(
        clip(f"{label}: {len(items)} problems{what}:", 2 * MAX_LINE),
        "fix each key listed (the format: docs/mlproject.md)",
        lines,
    )


def display_path(path: Path) -> str:
    """`path` as messages show it: relative to the current directory when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class Parameter:
    """One declared entry-point parameter: its type and its default (`None` means required)."""

    name: str
    type: str = "string"
    default: str | None = None

    @property
    def required(self) -> bool:
        """True when the MLproject gives no default, so the user must pass `-P name=value`."""
        return self.default is None


@dataclass(frozen=True, eq=False)
class EntryPoint:
    """A named entry point (from the MLproject) or a script entry point (`train.py`, `run.sh`)."""

    name: str
    command: str
    parameters: dict[str, Parameter] = field(default_factory=dict)
    project_dir: Path = Path(".")
    source: str = "MLproject"  # how messages name the file: the MLproject path, or the directory
    script: bool = False  # True for a `.py` / `.sh` file used as an entry point

    def resolve(self, params: dict[str, str], storage_dir: Path | None = None) -> ResolvedCommand:
        """Validate `params` against the declared parameters and build the command to run."""
        return resolve_entry_point(self, params, storage_dir)


@dataclass(frozen=True, eq=False)
class Project:
    """An MLflow-format project directory; `file` is None when it has no MLproject."""

    name: str
    directory: Path
    file: Path | None
    env: EnvRef | None
    entry_points: dict[str, EntryPoint]
    # One line each, for the user: sloppy but runnable things in the file (its top level).
    warnings: tuple[str, ...] = ()
    # Per entry point: its own warnings, and (for the broken ones) the error that selecting it raises.
    entry_warnings: dict[str, tuple[str, ...]] = field(default_factory=dict)
    broken: dict[str, ProjectError] = field(default_factory=dict)

    def warnings_for(self, name: str) -> list[str]:
        """What to warn about when `name` runs: the file's top level, that entry point, and every
        other entry point that cannot run (one line each)."""
        out = list(self.warnings) + list(self.entry_warnings.get(name, ()))
        for other, error in self.broken.items():
            if other != name:
                out.append(clip(f"entry point {other!r} cannot run and is skipped: {_first_problem(error)}"))
        return out

    def statuses(self) -> list[tuple[str, str, str]]:
        """(name, "ok" | "warnings" | "error", first problem or warning) for every entry point."""
        rows = []
        for name in [*self.entry_points, *(n for n in self.broken if n not in self.entry_points)]:
            if name in self.broken:
                rows.append((name, "error", _first_problem(self.broken[name])))
            elif self.entry_warnings.get(name):
                warns = self.entry_warnings[name]
                more = f" (+{len(warns) - 1} more)" if len(warns) > 1 else ""
                rows.append((name, "warnings", clip(warns[0]) + more))
            else:
                rows.append((name, "ok", ""))
        return rows

    def entry_point(self, name: str) -> EntryPoint:
        """The entry point called `name`, or a `.py` / `.sh` file in the project used as one."""
        if name in self.broken:
            raise self.broken[name]
        if name in self.entry_points:
            return self.entry_points[name]
        entry = script_entry_point(self, name)
        if entry is not None:
            return entry
        known = ", ".join(sorted([*self.entry_points, *self.broken])) or "none"
        where = (
            display_path(self.file) if self.file else f"{display_path(self.directory)} (no MLproject file)"
        )
        if name.endswith((".py", ".sh")):
            raise ProjectError(
                f"{where}: entry point {name!r}: no such file in {self.directory}",
                hint=f"check the path; entry points in the MLproject: {known}",
            )
        raise ProjectError(
            f"{where}: no entry point {name!r} (entry points: {known})",
            hint="pass -e with one of those names, or a .py / .sh file in the project (e.g. -e train.py)",
        )


def _first_problem(error: ProjectError) -> str:
    details = getattr(error, "details", None)
    if details:
        return f"{details[0]} (+{len(details) - 1} more)" if len(details) > 1 else details[0]
    return error.message.split(": ", 1)[-1]


def script_entry_point(project: Project, name: str) -> EntryPoint | None:
    """A `.py` or `.sh` file in the project used as an entry point (MLflow's rule), or None."""
    suffix = Path(name).suffix
    if suffix not in SCRIPT_RUNNERS or not (project.directory / name).is_file():
        return None
    runner = SCRIPT_RUNNERS[suffix] or os.environ.get("SHELL") or "bash"
    command = f"{shlex.quote(runner)} {shlex.quote(name)}".replace("{", "{{").replace("}", "}}")
    source = display_path(project.file) if project.file else display_path(project.directory)
    return EntryPoint(name, command, {}, project.directory, source, script=True)
