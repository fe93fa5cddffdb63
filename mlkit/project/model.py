"""The frozen dataclasses an MLproject is parsed into."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mlkit.env.ref import EnvRef
from mlkit.errors import ProjectError

PARAM_TYPES = ("string", "float", "int", "path", "uri")


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


@dataclass(frozen=True)
class ResolvedCommand:
    """An entry point's command with the parameters filled in.

    Exactly one of `argv` (run directly, every value one argv item) and `shell` (the MLproject
    command itself uses shell syntax; values are shell-quoted) is set. `params` holds the raw
    values to log (declared parameters in declaration order, defaults included, then extras);
    `types` maps every name in `params` to its type (`string` for extras); `extra` lists the
    names that the entry point does not declare, appended to the command as `--name value`.
    """

    argv: list[str] | None
    shell: str | None
    params: dict[str, str]
    types: dict[str, str]
    extra: list[str]


@dataclass(frozen=True)
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
        from mlkit.project.command import resolve_entry_point

        return resolve_entry_point(self, params, storage_dir)


@dataclass(frozen=True)
class Project:
    """An MLflow-format project directory; `file` is None when it has no MLproject."""

    name: str
    directory: Path
    file: Path | None
    env: EnvRef | None
    entry_points: dict[str, EntryPoint]

    def entry_point(self, name: str) -> EntryPoint:
        """The entry point called `name`, or a `.py` / `.sh` file in the project used as one."""
        if name in self.entry_points:
            return self.entry_points[name]
        from mlkit.project.load import script_entry_point

        entry = script_entry_point(self, name)
        if entry is not None:
            return entry
        known = ", ".join(sorted(self.entry_points)) or "none"
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
