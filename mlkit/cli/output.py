"""Everything the CLI writes: two consoles, JSON/CSV output, tables, and error rendering.

Results go to stdout, progress and errors to stderr. Without a terminal nothing is live and no
colour codes are written (unless FORCE_COLOR is set); NO_COLOR is honoured by rich itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from mlkit.cli import toplevel
from mlkit.errors import ExitCode, MlkitError
from mlkit.settings import traceback_enabled

if TYPE_CHECKING:  # annotations only: `mlkit run` reads its flags without typer (mlkit.cli.runflags)
    import typer


@dataclasses.dataclass(eq=False)
class _State:
    """Options of the root command that the renderers need (`--traceback`)."""

    traceback: bool = False


state = _State()


class _LazyConsole:
    """A rich Console made on first use, so `mlkit --help` never pays for importing rich."""

    def __init__(self, stderr: bool):
        self._stderr = stderr
        self._console: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            # import budget: rich loads on the first print, not when mlkit.cli is imported
            from rich.console import Console

            self._console = Console(stderr=self._stderr, highlight=False, soft_wrap=True)
        return getattr(self._console, name)


out: Any = _LazyConsole(stderr=False)
err: Any = _LazyConsole(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def interactive() -> bool:
    """True when a person is watching: stdout and stderr are terminals."""
    return sys.stdout.isatty() and sys.stderr.isatty()


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, paths, datetimes and enums as plain JSON values."""
    from datetime import datetime  # import budget: a plain `mlkit run` renders no JSON

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: to_jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, datetime):
        return obj.isoformat()
    if hasattr(obj, "value") and hasattr(obj, "name") and not isinstance(obj, (int, str)):
        return obj.value  # enums
    return obj


def print_json(obj: Any) -> None:
    """Exactly one JSON document on stdout: indented on a terminal, else one line (`>> log.jsonl`)."""
    indent = 2 if sys.stdout.isatty() else None
    sys.stdout.write(json.dumps(to_jsonable(obj), indent=indent, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def print_csv(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    # import budget: csv loads only for --csv output; a plain mlkit run never loads it
    import csv

    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if v is None else v for v in row])


_TSV_ESCAPES = str.maketrans({"\t": "\\t", "\n": "\\n", "\r": "\\r"})


def print_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
    """A rich table on a terminal; tab-separated plain lines when piped."""
    rows = [["" if v is None else str(v) for v in row] for row in rows]
    if not sys.stdout.isatty():  # one line a row, one tab a column: a tab or newline in a value is escaped
        sys.stdout.write("\t".join(columns) + "\n")
        for row in rows:
            sys.stdout.write("\t".join(cell.translate(_TSV_ESCAPES) for cell in row) + "\n")
        return
    # import budget: rich loads only when a table is rendered
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, show_lines=False, header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))  # user strings are never markup
    out.print(table)


def info(message: str) -> None:
    """A human line on stderr (never mixed into --json stdout). Plain write: no rich on the run path."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def line(message: str) -> None:
    """A plain result line on stdout (a run id, a path)."""
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def error(message: str, hint: str | None = None, details: Sequence[str] = ()) -> None:
    """`Error: message` (red on a terminal), one indented line per detail, and the hint, on
    stderr; user text is never markup."""
    if sys.stderr.isatty():
        # import budget: rich loads only when a message is styled
        from rich.text import Text

        err.print(Text("Error: ", style="bold red") + Text(message), highlight=False)
    else:
        info(f"Error: {message}")
    for detail in details:
        info(f"  {detail}")
    if hint:
        info(f"  hint: {hint}")


def fail(exc: MlkitError) -> NoReturn:
    """Print one error line and its hint on stderr, then exit with the error's code."""
    if state.traceback or traceback_enabled():
        import traceback  # import budget: only with --traceback

        traceback.print_exception(exc)
    error(exc.message, exc.hint, getattr(exc, "details", ()))
    raise SystemExit(int(exc.exit_code))


def handle_errors(fn: F) -> F:
    """Turn MlkitError into one line + exit code, Ctrl-C into 130. Apply to every command."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MlkitError as error:
            fail(error)
        except KeyboardInterrupt:
            info("Interrupted.")
            raise SystemExit(int(ExitCode.INTERRUPTED)) from None
        except BrokenPipeError:  # `mlkit runs list | head`
            sys.stderr.close()
            raise SystemExit(0) from None

    return wrapper  # type: ignore[return-value]  # functools.wraps keeps fn's signature; mypy sees (*Any)


def run_app(app: Callable[[], object], *, fast_exit: bool = False) -> None:
    """Call the command (the typer app, or `mlkit run` read without it) and leave with its exit
    code; errors outside commands get one line too.

    `fast_exit` (`mlkit run`, whose start-up and exit every trial of a sweep pays, and the sweep
    driver): leave without the interpreter's final teardown, which only frees memory the OS takes
    back anyway (~10 ms; ~50 ms once Optuna and NumPy are loaded)."""
    try:
        try:
            app()
        except MlkitError as error:
            fail(error)
    except SystemExit as done:
        if fast_exit or "rattler" in sys.modules:
            _exit_without_teardown(done.code)
        raise
    if fast_exit or "rattler" in sys.modules:
        _exit_without_teardown(0)


def _exit_without_teardown(code: object) -> None:
    """Leave with `code` after Python's exit handlers, skipping the interpreter's final teardown.

    py-rattler's native runtime can crash that teardown (SIGSEGV, seen intermittently after a
    failed network request in `mlkit env lock`), which would turn mlkit's exit code into -11.
    What the teardown does that matters still happens, in its order: threads that are not daemons
    are joined, the atexit handlers run (the store's, the fluent API's, logging's), the standard
    streams are flushed; mlkit's own files are written with os-level calls, never left buffered."""
    import atexit  # import budget: only on the way out (the module is built in)

    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    threading = sys.modules.get("threading")
    if threading is not None:  # as the interpreter does before its exit handlers
        for thread in threading.enumerate():
            if thread is not threading.main_thread() and not thread.daemon:
                thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


def human_bytes(n: int) -> str:
    """1536 -> '1.5 KiB'."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


STORE_HELP = "Tracking store directory (default: $MLKIT_TRACKING_URI, else ./mlruns)."
RUN_HELP = "Run id, unique id prefix (6+ characters) or unique run name."


def command_group(name: str, details: str) -> typer.Typer:
    """A `mlkit <name>` sub-app: shows its help when called bare, accepts -h. Its help is its
    summary in mlkit.cli.toplevel, then `details`."""
    import typer  # import budget: only when the typer app is built (never for a plain `mlkit run`)

    return typer.Typer(
        name=name,
        help=toplevel.help_text(name, details),
        no_args_is_help=True,
        context_settings={"help_option_names": ["-h", "--help"]},
    )


def open_store(path: str | Path | None, *, create: bool = False) -> Any:
    """The FileStore at --store PATH, else at $MLKIT_TRACKING_URI, else ./mlruns.

    Only a command that makes something (`create=True`) may create the store; any other gets
    NotFoundError (exit 66) when there is none, and leaves no `mlruns/` behind.
    """
    if create:
        # import budget: the tracking store loads only when a command opens it
        from mlkit.tracking.store import FileStore

        return FileStore(path)
    # import budget: the tracking store loads only when a command opens it
    from mlkit.tracking.queries import open_existing_store

    return open_existing_store(path)


def warn(message: str) -> None:
    """`warning: message` on stderr (yellow on a terminal); the command still succeeds."""
    if sys.stderr.isatty():
        # import budget: rich loads only when a message is styled
        from rich.text import Text

        err.print(Text("warning: ", style="bold yellow") + Text(message), highlight=False)
    else:
        info(f"warning: {message}")
