"""Shell completion: the bash/zsh script, and the candidates the shell asks for on each Tab.

The shell calls `_MLKIT_COMPLETE=bash_complete mlkit` with COMP_LINE, COMP_POINT and the word
under the cursor (`_MLKIT_COMP_CUR`); `mlkit.cli.main` sends that here before building anything
else, so `mlkit --help` and `mlkit run` never import this module. Commands and flags come from
click's own completion; the values below are read straight from the files (the store's run,
experiment and model directories, the project's MLproject), never creating anything.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import typer.main
from typer._click.shell_completion import (
    CompletionItem,
    ShellComplete,
    _resolve_context,
    _resolve_incomplete,
    split_arg_string,
)

from mlkit.errors import UsageError
from mlkit.settings import tracking_root

SHELLS = ("bash", "zsh")
VAR = "_MLKIT_COMPLETE"

SCRIPT = r"""# mlkit shell completion (bash; zsh through bashcompinit). Made by: mlkit --show-completion
_mlkit_completion() {
    local IFS=$'\n' line kind value response
    local cl="${COMP_LINE-}" cp="${COMP_POINT-}"
    if [[ -z $cl ]]; then
        cl="${COMP_WORDS[*]:0:$((COMP_CWORD + 1))}"; cl="${cl//$'\n'/ }"; cp=${#cl}
    fi
    response=$(COMP_LINE="$cl" COMP_POINT="$cp" _MLKIT_COMP_CUR="${COMP_WORDS[COMP_CWORD]}" \
               _MLKIT_COMPLETE=bash_complete "${1:-mlkit}" 2>/dev/null) || return 0
    COMPREPLY=()
    for line in $response; do
        kind=${line%%,*}; value=${line#*,}
        case $kind in
            dir) compopt -o dirnames 2>/dev/null; COMPREPLY=(); return 0 ;;
            file) compopt -o default 2>/dev/null; COMPREPLY=(); return 0 ;;
            nospace) compopt -o nospace 2>/dev/null; COMPREPLY+=("$value") ;;
            *) COMPREPLY+=("$value") ;;
        esac
    done
    return 0
}
complete -F _mlkit_completion mlkit
"""

ZSH_PREAMBLE = "autoload -U +X compinit && compinit\nautoload -U +X bashcompinit && bashcompinit\n"


def script(shell: str) -> str:
    """The completion script for `shell` (bash, or zsh through its bash-compatibility layer)."""
    return (ZSH_PREAMBLE if shell == "zsh" else "") + SCRIPT


def detect_shell() -> str:
    """bash or zsh, from $SHELL; UsageError for any other."""

    shell = os.path.basename(os.environ.get("SHELL", "") or "bash")
    if shell not in SHELLS:
        raise UsageError(
            f"$SHELL is {shell!r}: mlkit has completion for bash and zsh only",
            hint="SHELL=bash mlkit --show-completion prints the bash script to adapt",
        )
    return shell


def install(shell: str) -> tuple[Path, Path]:
    """Write the script under ~/.local/share/mlkit and source it from the shell's rc file (once).
    Returns (script path, rc file)."""
    # import budget: fsio loads only when completion is installed
    from mlkit.fsio import atomic_write

    data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "mlkit"
    data.mkdir(parents=True, exist_ok=True)
    target = data / f"completion.{shell}"
    atomic_write(target, script(shell).encode())
    rc = Path.home() / (".zshrc" if shell == "zsh" else ".bashrc")
    line = f"source {target}  # mlkit shell completion\n"
    existing = rc.read_text(errors="replace") if rc.exists() else ""
    if line not in existing:
        with open(rc, "a") as fh:
            fh.write(("" if not existing or existing.endswith("\n") else "\n") + line)
    return target, rc


# ----------------------------------------------------------------------------- the candidates
def _store_root(ctx: Any) -> Path | None:
    while ctx is not None:
        value = ctx.params.get("store") or ctx.params.get("store_path")
        if value or ctx.parent is None:
            try:
                return tracking_root(value)
            except Exception:
                return None
        ctx = ctx.parent
    return None


def _read(path: Path) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read(4096)
    except OSError:
        return None


def _meta_name(path: Path) -> str | None:
    for line in (_read(path / "meta.yaml") or "").splitlines():
        if line.startswith("name: "):
            return line[6:].strip().strip("'\"")
    return None


def _experiment_dirs(root: Path) -> list[os.DirEntry[str]]:
    try:
        return [e for e in os.scandir(root) if e.is_dir(follow_symlinks=False) and e.name.isdigit()]
    except OSError:
        return []


def experiments(root: Path) -> list[tuple[str, str]]:
    """(id, name) of every experiment in the store."""
    out = []
    for entry in _experiment_dirs(root):
        name = _meta_name(Path(entry.path))
        if name is not None:
            out.append((entry.name, name))
    return out


def runs(root: Path, limit: int = 5000) -> list[tuple[str, str | None]]:
    """(run id, run name) of the store's runs, newest first (names read for the first `limit`)."""
    found: list[tuple[float, str, Path]] = []
    for exp in _experiment_dirs(root):
        try:
            for entry in os.scandir(exp.path):
                if entry.is_dir(follow_symlinks=False) and len(entry.name) >= 6 and entry.name.isalnum():
                    found.append((entry.stat().st_mtime, entry.name, Path(entry.path)))
        except OSError:
            continue
    found.sort(reverse=True)
    out = []
    for i, (_, run_id, path) in enumerate(found):
        name = (_read(path / "tags" / "mlflow.runName") or "").strip() if i < limit else ""
        out.append((run_id, name or None))
    return out


def models(root: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(root / "models") if e.is_dir(follow_symlinks=False))
    except OSError:
        return []


def _model_dir(ctx: Any) -> Path | None:
    root, name = _store_root(ctx), ctx.params.get("name")
    return root / "models" / name if root is not None and name else None


def aliases(model: Path | None) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(model / "aliases")) if model else []
    except OSError:
        return []


def versions(model: Path | None) -> list[str]:
    try:
        names = [e.name for e in os.scandir(model)] if model else []
    except OSError:
        return []
    return sorted(
        (n[8:] for n in names if n.startswith("version-")), key=lambda v: int(v) if v.isdigit() else 0
    )


def _items(values: Sequence[tuple[str, str | None]], incomplete: str) -> list[Any]:
    seen: set[str] = set()
    out = []
    for value, help in values:
        if value.startswith(incomplete) and value not in seen:
            seen.add(value)
            out.append(CompletionItem(value, help=help))
    return out


def complete_runs(ctx: Any, param: Any, incomplete: str) -> list[Any]:
    root = _store_root(ctx)
    found = runs(root) if root else []
    return _items([(r, n) for r, n in found] + [(n, r) for r, n in found if n], incomplete)


def complete_experiments(ctx: Any, param: Any, incomplete: str) -> list[Any]:
    root = _store_root(ctx)
    found = experiments(root) if root else []
    if param.name == "experiment_id":
        return _items([(i, n) for i, n in found], incomplete)
    both = param.name != "experiment_name"  # --experiment / -x take an id or a name
    return _items([(n, i) for i, n in found] + ([(i, n) for i, n in found] if both else []), incomplete)


def complete_models(ctx: Any, param: Any, incomplete: str) -> list[Any]:
    root = _store_root(ctx)
    return _items([(m, None) for m in (models(root) if root else [])], incomplete)


def complete_aliases(ctx: Any, param: Any, incomplete: str) -> list[Any]:
    return _items([(a, None) for a in aliases(_model_dir(ctx))], incomplete)


def complete_versions(ctx: Any, param: Any, incomplete: str) -> list[Any]:
    return _items([(v, None) for v in versions(_model_dir(ctx))], incomplete)


def complete_model_uri(ctx: Any, param: Any, incomplete: str) -> list[Any]:
    """`runs:/<id>/model` for register, plus `models:/<name>/<version>` / `@alias` for download."""
    root = _store_root(ctx)
    if root is None:
        return []
    values: list[tuple[str, str | None]] = [(f"runs:/{r}/model", n) for r, n in runs(root)]
    if ctx.command.name == "download":
        for name in models(root):
            model = root / "models" / name
            values += [(f"models:/{name}/{v}", None) for v in versions(model)]
            values += [(f"models:/{name}@{a}", None) for a in aliases(model)]
    return _items(values, incomplete)


def _project(ctx: Any) -> Any:
    # import budget: the project parser loads only to complete entry points or params
    from mlkit.project import survey_project

    try:
        return survey_project(ctx.params.get("project_dir") or ".")
    except Exception:
        return None


def complete_entry_points(ctx: Any, param: Any, incomplete: str) -> list[Any]:
    project = _project(ctx)
    if project is None:
        return []
    values = [(name, "entry point") for name in sorted(project.entry_points)]
    try:
        values += sorted(
            (e.name, "script") for e in os.scandir(project.directory) if e.name.endswith((".py", ".sh"))
        )
    except OSError:
        pass
    return _items(values, incomplete)


def complete_params(ctx: Any, param: Any, incomplete: str) -> list[Any]:
    """`-P` names of the chosen entry point as `name=`; after `name=`, its default value."""
    project = _project(ctx)
    entry = project.entry_points.get(ctx.params.get("entry_point") or "main") if project else None
    if entry is None:
        return []
    given = {item.partition("=")[0] for item in ctx.params.get("param") or ()}
    values = []
    for name, spec in entry.parameters.items():
        if "=" in incomplete:
            if spec.default is not None:
                values.append((f"{name}={spec.default}", spec.type))
        elif name not in given:
            values.append(
                (
                    f"{name}=",
                    f"{spec.type}, default {spec.default}" if spec.default is not None else spec.type,
                )
            )
    return _items(values, incomplete)


def _choices(*values: str) -> Callable[..., list[Any]]:
    return lambda ctx, param, incomplete: _items([(v, None) for v in values], incomplete)


# (command path, parameter name) -> completer; "*" matches any command
COMPLETERS: dict[tuple[str, str], Callable[..., list[Any]]] = {
    ("runs show", "run"): complete_runs,
    ("runs logs", "run"): complete_runs,
    ("runs delete", "runs"): complete_runs,
    ("runs restore", "runs"): complete_runs,
    ("runs compare", "runs"): complete_runs,
    ("report", "runs"): complete_runs,
    ("models promote", "from_run"): complete_runs,
    ("gpus", "release"): complete_runs,
    ("*", "experiment"): complete_experiments,
    ("run", "experiment_name"): complete_experiments,
    ("run", "experiment_id"): complete_experiments,
    ("run", "entry_point"): complete_entry_points,
    ("run", "param"): complete_params,
    ("run", "env_manager"): _choices("auto", "local", "uv", "conda"),
    ("env create", "env_manager"): _choices("auto", "local", "uv", "conda"),
    ("run", "gpus"): _choices("auto", "none", "all"),
    ("models register", "uri"): complete_model_uri,
    ("models download", "uri"): complete_model_uri,
    ("models alias", "alias"): complete_aliases,
    ("models promote", "alias"): complete_aliases,
    ("models transition", "stage"): _choices("None", "Staging", "Production", "Archived"),
    ("*", "version"): complete_versions,
    ("sweep show", "sweep"): complete_runs,
    ("sweep resume", "sweep"): complete_runs,
    ("sweep cancel", "sweep"): complete_runs,
    ("sweep start", "experiment_name"): complete_experiments,
    ("sweep start", "entry_point"): complete_entry_points,
    ("sweep start", "param"): complete_params,
    ("sweep start", "method"): _choices("grid", "random", "tpe"),
    ("sweep start", "prune"): _choices("median", "hyperband"),
    ("sweep start", "backend"): _choices("local", "slurm"),
    ("sweep start", "env_manager"): _choices("auto", "local", "uv", "conda"),
}
MODEL_NAME_COMMANDS = {
    "show",
    "transition",
    "alias",
    "tag",
    "describe",
    "promote",
    "history",
    "delete",
    "register",
}


def attach(command: Any, path: str = "") -> None:
    """Give the parameters of `command` and its subcommands their completers (in place)."""
    for param in command.params:
        if getattr(param, "_custom_shell_complete", None) is not None:
            continue
        fn = COMPLETERS.get((path, param.name or "")) or COMPLETERS.get(("*", param.name or ""))
        if path.startswith("models ") and param.name == "name" and path[7:] in MODEL_NAME_COMMANDS:
            fn = complete_models
        if param.name in ("store", "store_path", "project", "project_dir"):
            fn = _dirs
        if fn is not None:
            param._custom_shell_complete = fn
    for name, sub in (getattr(command, "commands", None) or {}).items():
        attach(sub, f"{path} {name}".strip())


def _dirs(ctx: Any, param: Any, incomplete: str) -> list[Any]:
    return [CompletionItem(incomplete, type="dir")]


def _bash_class() -> type:
    class Bash(ShellComplete):
        """COMP_LINE/COMP_POINT in; `kind,value` lines out, each value cut to replace the word bash
        completes (bash splits words at `=` and `:`, so `-P epochs=` completes after the `=`)."""

        name = "bash"
        source_template = SCRIPT

        def source_vars(self) -> dict[str, Any]:
            return {}

        def source(self) -> str:
            return SCRIPT

        def get_completion_args(self) -> tuple[list[str], str]:
            line = os.environ.get("COMP_LINE", "")
            try:
                line = line[: int(os.environ.get("COMP_POINT", len(line)))]
            except ValueError:
                pass
            words = split_arg_string(line)
            incomplete = "" if not words or line[-1:].isspace() else words.pop()
            self.token = incomplete
            return words[1:], incomplete

        def get_completions(self, args: list[str], incomplete: str) -> list[Any]:
            ctx = _resolve_context(self.cli, {}, self.prog_name, list(args))
            obj, incomplete = _resolve_incomplete(ctx, list(args), incomplete)
            if getattr(obj, "param_type_name", "") == "option" and args:
                # click stops parsing at an option still waiting for its value (`run p -P ep`),
                # so the arguments before it (the project) are read without that option
                before = _resolve_context(self.cli, {}, self.prog_name, args[:-1])
                if before.command is ctx.command:
                    for key, value in before.params.items():
                        if ctx.params.get(key) in (None, ()):
                            ctx.params[key] = value
            return obj.shell_complete(ctx, incomplete)

        def complete(self) -> str:
            args, incomplete = self.get_completion_args()
            # the part of the word click completes (`--store=ml` -> `ml`), as click splits it
            clicked = (
                incomplete.partition("=")[2]
                if incomplete.startswith("-") and "=" in incomplete
                else incomplete
            )
            head = self.token[: len(self.token) - len(clicked)]
            cur = os.environ.get("_MLKIT_COMP_CUR", self.token)
            keep = self.token[: len(self.token) - len(cur)] if self.token.endswith(cur) else ""
            lines = []
            for item in self.get_completions(args, incomplete):
                if item.type in ("dir", "file"):
                    return f"{item.type},"
                full = head + str(item.value)
                if not full.startswith(keep):
                    continue
                value = full[len(keep) :]
                kind = "nospace" if value.endswith(("=", "/", ":")) else "plain"
                lines.append(f"{kind},{value}")
            return "\n".join(lines)

        def format_completion(self, item: Any) -> str:  # unused: complete() formats
            return str(item.value)

    return Bash


def complete_main(instruction: str, build: Callable[[list[str]], Any]) -> int:
    """Answer `_MLKIT_COMPLETE=<instruction>`: `bash_source`/`zsh_source` print the script,
    `bash_complete`/`zsh_complete` the candidates (click's and typer's spellings both work)."""
    a, _, b = instruction.partition("_")
    shell, action = (a, b) if a in SHELLS else (b, a)
    if shell not in SHELLS or action not in ("source", "complete"):
        sys.stderr.write(f"mlkit: {VAR}={instruction!r}: expected bash_source, zsh_source or bash_complete\n")
        return 1
    if action == "source":
        sys.stdout.write(script(shell))
        return 0

    words = (os.environ.get("COMP_LINE", "")[: int(os.environ.get("COMP_POINT") or 10**6)]).split()
    command = typer.main.get_command(build(words[1:]))
    attach(command)
    comp = _bash_class()(command, {}, "mlkit", VAR)
    try:
        out = comp.complete()
    except Exception:  # a Tab never prints a traceback into the command line
        return 1
    if out:
        sys.stdout.write(out + "\n")
    return 0
