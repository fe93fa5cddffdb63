"""The `mlkit` command: a typer app, one module per command group.

Only this package imports typer or rich, prints, or exits. Each command parses its flags, calls
one core function, and renders what it returns through `mlkit.cli.output`.
"""

from __future__ import annotations

import importlib
import os

from mlkit import __version__

# Plain click help instead of typer's rich help: rich + markdown-it cost ~300 ms per `--help`.
_saved = os.environ.get("TYPER_USE_RICH")
os.environ["TYPER_USE_RICH"] = "0"
import typer  # noqa: E402

if _saved is None:
    del os.environ["TYPER_USE_RICH"]
else:
    os.environ["TYPER_USE_RICH"] = _saved


app = typer.Typer(
    name="mlkit",
    help="Run MLflow-format projects on your own GPU machines and track them in a file store.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Each module has `register(app)`, adding its commands or sub-apps. Keep them light at import
# time: no torch, pynvml, py-rattler or conda-lock at module level.
COMMAND_MODULES = ("run", "runs", "compare", "experiments", "gpus", "env", "models", "gc", "report")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mlkit {__version__}")
        raise typer.Exit()


@app.callback()
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


for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(f"mlkit.cli.{_name}")
    except ModuleNotFoundError as exc:  # a command group still being written
        if exc.name != f"mlkit.cli.{_name}":
            raise
        continue
    _module.register(app)


def main() -> None:
    """Console-script entry point."""
    from mlkit.cli.output import run_app

    run_app(app)
