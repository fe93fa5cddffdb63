"""The `mlkit --help` page, declared once: the root help, the root options and each top-level
command's summary, in the page's order.

The typer app (mlkit.cli.typer_app) takes from here its root help, its root options' help and
environment variables, the Commands list and the first paragraph of every `mlkit NAME --help`.
`mlkit --help` and `mlkit -h` alone are rendered from here by `render_help`, without importing
typer or any command module (mlkit.cli.main): ~100 ms less on the 2-core VM (docs/running.md).
`render_help` lays the page out exactly as the typer app's plain click help does
(tests/test_cli_toplevel_help.py compares the two at many widths). This module imports only os
and sys (textwrap while rendering).
"""

from __future__ import annotations

import os
import sys

HELP = (
    "Run MLflow-format projects on your own GPU machines and track them in a file store.\n\n"
    "Example: mlkit run projects/cnn -P epochs=5 --gpus 1"
)

# The root options (mlkit.cli.typer_app._root's parameters, in order): flag -> (help, env var).
OPTIONS: dict[str, tuple[str, str | None]] = {
    "--traceback": ("Show the Python traceback for mlkit's own errors.", "MLKIT_TRACEBACK"),
    "--version": ("Print the version.", None),
    "--install-completion": ("Install Tab completion for your shell ($SHELL: bash or zsh).", None),
    "--show-completion": ('Print the completion script (eval "$(mlkit --show-completion)").', None),
}

# Each top-level command and group -> its summary: its line in `mlkit --help` and the first
# paragraph of `mlkit NAME --help` (`help_text`). In the page's order, which is typer's: the
# commands in registration order (COMMAND_MODULES), then the groups in registration order.
COMMANDS: dict[str, str] = {
    "run": "Run a project's entry point as a tracked, supervised run.",
    "gpus": "List the GPUs NVML sees: memory, utilisation, power, clocks, MIG, processes and leases.",
    "gc": "Free disk space: deleted runs, runs outside your retention rules, orphaned artifacts.",
    "report": "Write an HTML report: runs table, metric curves, param-vs-metric scatter, system metrics, each run.",
    "runs": "List, show, compare, follow and delete tracked runs.",
    "experiments": "List, create, delete and restore experiments.",
    "env": "Project environments: lockfiles, building ahead of time, the cache.",
    "models": "Register, stage, alias, promote and load models (MLflow's registry layout).",
    "sweep": "Run a project over a parameter space: a parent run, one tracked run per trial.",
}


def help_text(name: str, details: str | None = None) -> str:
    """The description of `mlkit NAME --help`: NAME's summary, then `details` (the paragraphs
    after it; a docstring's indentation is removed). Called while the typer app is built."""
    import inspect  # import budget: only when the typer app is built

    summary = COMMANDS[name]
    return f"{summary}\n\n{inspect.cleandoc(details)}" if details else summary


def render_help() -> str:
    """The page `mlkit --help` prints, final newline included: click's plain help layout
    (typer/_click/formatting.py: HelpFormatter, write_usage, write_text, write_dl, wrap_text) at
    the width click picks (max(min(terminal columns, 80) - 2, 50))."""
    import textwrap  # import budget: only for this page

    class Wrapper(textwrap.TextWrapper):
        """click's TextWrapper: a word longer than the line is cut where the line ends."""

        def _handle_long_word(
            self, reversed_chunks: list[str], cur_line: list[str], cur_len: int, width: int
        ) -> None:
            space_left = max(width - cur_len, 1)
            last = reversed_chunks[-1]
            cur_line.append(last[:space_left])
            reversed_chunks[-1] = last[space_left:]

    def wrap(text: str, width: int, initial: str = "", subsequent: str = "") -> str:
        """click's wrap_text(..., preserve_paragraphs=True): paragraphs split at empty lines, each
        indented as its first line is; one whose first line is "\\b" is kept as it is."""
        paragraphs: list[tuple[int, bool, str]] = []
        lines: list[str] = []
        indent: int | None = None
        for line in [*text.expandtabs().splitlines(), ""]:
            if line:
                if indent is None:
                    indent = len(line) - len(line.lstrip())
                    line = line.lstrip()
                lines.append(line)
                continue
            if lines:
                raw = lines[0].strip() == "\b"
                paragraphs.append((indent or 0, raw, "\n".join(lines[1:]) if raw else " ".join(lines)))
                lines = []
            indent = None
        out = []
        for extra, raw, paragraph in paragraphs:
            first, rest = initial + " " * extra, subsequent + " " * extra
            if raw:
                out.append(
                    "\n".join((rest if i else first) + s for i, s in enumerate(paragraph.splitlines()))
                )
            else:
                wrapper = Wrapper(
                    width, initial_indent=first, subsequent_indent=rest, replace_whitespace=False
                )
                out.append(wrapper.fill(paragraph))
        return "\n\n".join(out)

    def definitions(rows: list[tuple[str, str]]) -> str:
        """click's HelpFormatter.write_dl at indentation 2."""
        first_col = min(max(len(term) for term, _ in rows), 30) + 2
        out = []
        for term, text in rows:
            out.append(f"  {term}")
            if not text:
                out.append("\n")
                continue
            out.append(
                " " * (first_col - len(term)) if len(term) <= first_col - 2 else "\n" + " " * (first_col + 2)
            )
            lines = wrap(text, max(width - first_col - 2, 10)).splitlines()
            out.append(
                "".join(
                    f"{line}\n" if i == 0 else f"{'':>{first_col + 2}}{line}\n"
                    for i, line in enumerate(lines)
                )
            )
        return "".join(out)

    width = max(min(_terminal_columns(), 80) - 2, 50)
    options = [
        (flag, f"{help}  [env var: {envvar}]" if envvar else help) for flag, (help, envvar) in OPTIONS.items()
    ]
    page = (
        Wrapper(
            width, initial_indent="Usage: mlkit ", subsequent_indent=" " * 13, replace_whitespace=False
        ).fill("[OPTIONS] COMMAND [ARGS]...")
        + "\n\n"
        + wrap(HELP, width, "  ", "  ")
        + "\n\nOptions:\n"
        + definitions([*options, ("-h, --help", "Show this message and exit.")])
        + "\nCommands:\n"
        + definitions([(name, summary.strip()) for name, summary in COMMANDS.items()])
    )
    return page.rstrip("\n") + "\n"


def _terminal_columns() -> int:
    """shutil.get_terminal_size().columns, without importing shutil (it imports bz2 and lzma):
    $COLUMNS if a positive integer, else the width of the terminal on sys.__stdout__, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns > 0:
        return columns
    try:
        size = os.get_terminal_size(sys.__stdout__.fileno())  # type: ignore[union-attr]  # None: AttributeError
    except (AttributeError, ValueError, OSError):
        return 80
    return size.columns or 80
