"""The `mlkit` command: a typer app (mlkit.cli.typer_app), one module per command group.

Only this package imports typer or rich, prints, or exits. Each command parses its flags, calls
one core function, and renders what it returns through `mlkit.cli.output`. This module stays
light: `mlkit run` with plain flags never imports typer (mlkit.cli.runflags), nor does
`mlkit --help` (mlkit.cli.toplevel).
"""

from __future__ import annotations

import os
import sys
from typing import Any


def __getattr__(name: str) -> Any:
    """`from mlkit.cli import app` gives the full app, built on first use; `build_app` is
    mlkit.cli.typer_app's."""
    if name in ("app", "build_app"):
        from mlkit.cli import typer_app  # import budget: typer loads only when an app is built

        value = typer_app.build_app() if name == "app" else typer_app.build_app
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mlkit.cli' has no attribute {name!r}")


def main(*, fast_exit: bool = False) -> None:
    """Console-script entry point: builds only the command group the arguments name.

    `fast_exit`: `mlkit run` and `mlkit sweep` then leave without the interpreter's teardown
    (output.run_app; for a sweep, freeing Optuna's and NumPy's objects is ~50 ms); the
    program entry points (`entry`, `python -m mlkit`) ask for it, a caller in Python does not."""
    if os.environ.get("_MLKIT_COMPLETE"):  # the shell asks for Tab candidates (mlkit.cli.complete)
        from mlkit.cli.complete import complete_main
        from mlkit.cli.typer_app import build_app, modules_for

        sys.exit(complete_main(os.environ["_MLKIT_COMPLETE"], lambda words: build_app(modules_for(words))))
    args = sys.argv[1:]
    if not all(arg.isascii() for arg in args):
        _refuse_undecodable(args)
    if args in (["--help"], ["-h"]):  # the top-level page, without typer (~100 ms): mlkit.cli.toplevel
        from mlkit.cli.toplevel import render_help

        if sys.stdout is not None:  # (none attached: click prints nothing either)
            sys.stdout.write(render_help())
            sys.stdout.flush()
        sys.exit(0)
    from mlkit.cli.output import run_app

    if args[:1] == ["run"]:  # the common line, read without typer (~40 ms of every run and trial)
        from mlkit.cli import runflags

        values = runflags.parse(args[1:])
        if values is not None:
            from mlkit.cli.run import run_command

            run_app(lambda: run_command(**values), fast_exit=fast_exit)
            return
    from mlkit.cli.typer_app import MODULES_FOR, build_app, modules_for

    modules = modules_for(args)
    app = build_app(modules)
    run_app(
        lambda: app(prog_name="mlkit"),
        fast_exit=fast_exit and modules in (MODULES_FOR["run"], MODULES_FOR["sweep"]),
    )


def _refuse_undecodable(args: list[str]) -> None:
    """Exit with one line (UsageError) when an argument is not UTF-8: the store holds text as
    UTF-8, as MLflow's does, so such bytes could not be recorded (Python keeps them as lone
    surrogates, which no write can encode). Checked before anything is created."""
    for number, arg in enumerate(args, 1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            from mlkit.cli.output import fail
            from mlkit.errors import UsageError

            shown = os.fsencode(arg).decode("utf-8", "backslashreplace")
            fail(
                UsageError(
                    f"argument {number} ({shown}) is not UTF-8 text; mlkit records its arguments in the "
                    "store as UTF-8, as MLflow does",
                    hint="pass it as UTF-8 (iconv -f latin1 -t utf-8 converts text; rename a file or "
                    "directory whose name is not UTF-8)",
                )
            )


def entry() -> None:
    """The `mlkit` program: main() for a process that ends with the command."""
    main(fast_exit=True)
