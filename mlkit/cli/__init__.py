"""The `mlkit` command: a typer app, one module per command group.

Only this package imports typer or rich, prints, or exits. Each command parses its flags, calls
one core function, and renders what it returns through `mlkit.cli.output`.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from mlkit import __version__

# Plain click help instead of typer's rich help: rich + markdown-it cost ~300 ms per `--help`.
_saved = os.environ.get("TYPER_USE_RICH")
os.environ["TYPER_USE_RICH"] = "0"
import typer  # noqa: E402

if _saved is None:
    del os.environ["TYPER_USE_RICH"]
else:
    os.environ["TYPER_USE_RICH"] = _saved


# Each module has `register(app)`, adding its commands or sub-apps. Keep them light at import
# time: no torch, pynvml, py-rattler or conda-lock at module level.
COMMAND_MODULES = ("run", "runs", "compare", "experiments", "gpus", "env", "models", "gc", "report")

# The modules one top-level command needs: `mlkit run ...` builds only the `run` command, which
# keeps typer from building (and mlkit from importing) the other 30-odd commands on every run.
_MODULES_FOR = {
    "run": ("run",),
    "runs": ("runs", "compare"),
    "experiments": ("experiments",),
    "gpus": ("gpus",),
    "env": ("env",),
    "models": ("models",),
    "gc": ("gc",),
    "report": ("report",),
}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mlkit {__version__}")
        raise typer.Exit()


def _root(
    traceback: bool = typer.Option(
        False,
        "--traceback",
        help="Show the Python traceback for mlkit's own errors.",
        envvar="MLKIT_TRACEBACK",
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    from mlkit.cli import output

    output.state.traceback = traceback


def build_app(modules: Sequence[str] = COMMAND_MODULES) -> typer.Typer:
    """The typer app with the commands of `modules` registered (all of them by default)."""
    app = typer.Typer(
        name="mlkit",
        help="Run MLflow-format projects on your own GPU machines and track them in a file store.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(_root)
    for name in modules:
        importlib.import_module(f"mlkit.cli.{name}").register(app)
    return app


def __getattr__(name: str) -> Any:
    """`from mlkit.cli import app` gives the full app, built on first use."""
    if name == "app":
        globals()["app"] = build_app()
        return globals()["app"]
    raise AttributeError(f"module 'mlkit.cli' has no attribute {name!r}")


def main() -> None:
    """Console-script entry point: builds only the command group the arguments name."""
    from mlkit.cli.output import run_app

    command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
    run_app(build_app(_MODULES_FOR.get(command or "", COMMAND_MODULES)))
