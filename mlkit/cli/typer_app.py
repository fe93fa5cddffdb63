"""The typer app of the `mlkit` command: the root options, and one module per command group
registering its commands (`build_app`). `mlkit.cli.main` builds only the group a command line names,
and a plain `mlkit run` line is read without typer at all (mlkit.cli.runflags).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from typing import Any

from mlkit import __version__
from mlkit.cli import output, toplevel

# Plain click help instead of typer's rich help: rich + markdown-it cost ~300 ms per `--help`.
_saved = os.environ.get("TYPER_USE_RICH")
os.environ["TYPER_USE_RICH"] = "0"
import typer  # noqa: E402
import typer.core  # noqa: E402

if _saved is None:
    del os.environ["TYPER_USE_RICH"]
else:
    os.environ["TYPER_USE_RICH"] = _saved


# Each module has `register(app)`, adding its commands or sub-apps. Keep them light at import
# time: no torch, pynvml, py-rattler or conda-lock at module level.
COMMAND_MODULES = ("run", "runs", "compare", "experiments", "gpus", "env", "models", "gc", "report", "sweep")

# The modules one top-level command needs: `mlkit run ...` builds only the `run` command, which
# keeps typer from building (and mlkit from importing) the other 30-odd commands on every run.
MODULES_FOR = {
    "run": ("run",),
    "runs": ("runs", "compare"),
    "experiments": ("experiments",),
    "gpus": ("gpus",),
    "env": ("env",),
    "models": ("models",),
    "gc": ("gc",),
    "report": ("report",),
    "sweep": ("sweep",),
}


def modules_for(argv: Sequence[str]) -> Sequence[str]:
    """The command modules the command line names (all of them for `mlkit --help`)."""
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    return MODULES_FOR.get(command or "", COMMAND_MODULES)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mlkit {__version__}")
        raise typer.Exit()


def _completion(value: bool, install: bool) -> None:
    if value:
        # import budget: the completion scripts load only for --show/--install-completion
        from mlkit.cli import complete
        from mlkit.errors import MlkitError

        try:
            shell = complete.detect_shell()
            if install:
                target, rc = complete.install(shell)
                typer.echo(f"{shell} completion written to {target} and sourced from {rc}")
                typer.echo(f"open a new shell (or: source {rc}) to use it")
            else:
                typer.echo(complete.script(shell), nl=False)
        except MlkitError as exc:
            output.fail(exc)
        raise typer.Exit()


def _option(flag: str, **settings: Any) -> Any:
    """A root option, its help and environment variable as mlkit.cli.toplevel declares them."""
    help, envvar = toplevel.OPTIONS[flag]
    return typer.Option(False, flag, help=help, envvar=envvar, **settings)


def _root(
    traceback: bool = _option("--traceback"),
    version: bool = _option("--version", callback=_version, is_eager=True),
    install_completion: bool = _option(
        "--install-completion", callback=lambda value: _completion(value, install=True), is_eager=True
    ),
    show_completion: bool = _option(
        "--show-completion", callback=lambda value: _completion(value, install=False), is_eager=True
    ),
) -> None:
    output.state.traceback = traceback


def build_app(modules: Sequence[str] = COMMAND_MODULES) -> typer.Typer:
    """The typer app with the commands of `modules` registered (all of them by default)."""
    app = typer.Typer(
        name="mlkit",
        help=toplevel.HELP,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(_root)
    for name in modules:
        importlib.import_module(f"mlkit.cli.{name}").register(app)
    _full_short_help(app, top=True)
    return app


def _first_paragraph(text: str | None) -> str | None:
    if not text:
        return None
    lines = []
    for line in text.strip().splitlines():
        if not line.strip():
            break
        lines.append(line.strip())
    return " ".join(lines) or None


def _command_class() -> type:
    """typer's command, with arguments in the usage line as `PROJECT_DIR` / `[NAME]` / `RUNS...`
    (typer writes a required one as `{project_dir}`)."""
    global _Command
    if _Command is None:
        from typer.core import TyperArgument, TyperCommand  # made on first use: typer is loaded by then

        class Command(TyperCommand):
            def collect_usage_pieces(self, ctx: Any) -> list[str]:
                pieces = [self.options_metavar] if self.options_metavar else []
                for param in self.get_params(ctx):
                    if isinstance(param, TyperArgument):
                        name = param.metavar or (param.name or "").upper()
                        name += "..." if param.nargs != 1 and "..." not in name else ""
                        pieces.append(name if param.required else f"[{name}]")
                return pieces

        _Command = Command
    return _Command


_Command: type | None = None


def _full_short_help(app: typer.Typer, *, top: bool = False) -> None:
    """Command lists show each command's whole first paragraph: click would cut it at 45-60
    characters with "..." (and typer does not pass the docstring's line breaks through). The
    top-level list (`top`) shows mlkit.cli.toplevel's summaries, the first paragraph of each
    command's own help (toplevel.help_text)."""
    for info in app.registered_commands:
        if info.cls is None or info.cls is typer.core.TyperCommand:
            info.cls = _command_class()
        if not info.short_help:
            info.short_help = (
                _summary(info.name)
                if top
                else _first_paragraph(info.help or (info.callback and info.callback.__doc__))
            )
    for group in app.registered_groups:
        sub = group.typer_instance
        if sub is None:
            continue
        short: str | None
        if top:
            short = _summary(group.name or sub.info.name)
        else:
            short = _first_paragraph(group.help if isinstance(group.help, str) else sub.info.help)
        if not isinstance(group.short_help, str):
            group.short_help = short
        if not isinstance(sub.info.short_help, str):
            sub.info.short_help = short
        _full_short_help(sub)


def _summary(name: object) -> str:
    """A top-level command's line in `mlkit --help`: declared in mlkit.cli.toplevel, nowhere else."""
    if not isinstance(name, str) or name not in toplevel.COMMANDS:
        raise RuntimeError(f"top-level command {name!r} has no summary in mlkit.cli.toplevel.COMMANDS")
    return toplevel.COMMANDS[name]
