"""`mlkit --help` is rendered from mlkit.cli.toplevel without typer: the same bytes as the typer
app's page at every width, and none of typer, click, rich or the command modules imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers import run_on_a_terminal

WIDTHS = ["20", "40", "50", "52", "60", "79", "80", "81", "100", "200", "0", "-5", "abc", " 90 "]

# The typer app's own page: the app built as `mlkit` builds it, called with --help (what
# `mlkit --help` ran before the fast path). One process, one page per COLUMNS value, as JSON.
TYPER_PAGES = """
import io, json, os, sys
from contextlib import redirect_stdout
from mlkit.cli.typer_app import build_app

app = build_app()
pages = {}
for columns in json.loads(sys.argv[1]):
    if columns is None:
        os.environ.pop("COLUMNS", None)
    else:
        os.environ["COLUMNS"] = columns
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        try:
            app(prog_name="mlkit", args=["--help"])
        except SystemExit as done:
            assert done.code in (0, None), done.code
    pages[str(columns)] = buffer.getvalue()
print(json.dumps(pages))
"""


def _env(columns: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "_MLKIT_COMPLETE")}
    return env if columns is None else {**env, "COLUMNS": columns}


def _typer_pages(widths: list[str | None]) -> dict[str, str]:
    out = subprocess.run(
        [sys.executable, "-c", TYPER_PAGES, json.dumps(widths)],
        env=_env(None),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


def _fast_page(flag: str, columns: str | None) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "mlkit", flag], env=_env(columns), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not result.stderr, result.stderr
    return result.stdout


def test_fast_page_is_the_typer_page_at_every_width():
    widths: list[str | None] = [*WIDTHS, None]  # None: no COLUMNS, no terminal (80)
    typer_pages = _typer_pages(widths)
    assert (
        "Commands:" in typer_pages["80"] and "Usage: mlkit [OPTIONS] COMMAND [ARGS]..." in typer_pages["80"]
    )
    for columns in widths:
        for flag in ("--help", "-h"):
            assert _fast_page(flag, columns) == typer_pages[str(columns)], (flag, columns)


def test_the_page_follows_the_width():
    """click's width: COLUMNS - 2, at least 50 and at most 78 (the differential test above would
    pass with two renderers that both ignore it)."""
    narrow, wide = _fast_page("--help", "20"), _fast_page("--help", "200")
    assert max(len(line) for line in narrow.splitlines()) <= 50
    assert max(len(line) for line in wide.splitlines()) in range(51, 79)


def _on_terminal(code: str, columns: int) -> bytes:
    """What `python -c code` shows on a pseudo-terminal `columns` wide (no COLUMNS set)."""
    returncode, screen = run_on_a_terminal([sys.executable, "-c", code], env=_env(None), columns=columns)
    assert returncode == 0, screen
    return screen


@pytest.mark.parametrize("columns", [0, 57, 120])
def test_fast_page_on_a_terminal_takes_its_width(columns):
    """No COLUMNS: the width of the terminal on stdout, as shutil.get_terminal_size reads it
    (a terminal that says 0 columns: 80)."""
    fast = "import sys; sys.argv = ['mlkit', '--help']\nfrom mlkit.cli import main\nmain()"
    typer = "from mlkit.cli.typer_app import build_app\nbuild_app()(prog_name='mlkit', args=['--help'])"
    page = _on_terminal(fast, columns)
    assert page == _on_terminal(typer, columns)
    assert b"Commands:" in page


def test_every_top_level_command_is_declared_with_its_summary_first():
    """mlkit.cli.toplevel names every top-level command (in the page's order, checked above), and
    each `mlkit NAME --help` starts with that summary and keeps its details."""
    code = (
        "import json, typer.main\nfrom mlkit.cli import toplevel\nfrom mlkit.cli.typer_app import build_app\n"
        "group = typer.main.get_command(build_app())\n"
        "print(json.dumps({'declared': list(toplevel.COMMANDS), 'summaries': toplevel.COMMANDS,\n"
        "    'commands': {n: c.help for n, c in group.commands.items()}}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=_env(None), capture_output=True, text=True, check=True
    )
    found = json.loads(out.stdout)
    assert sorted(found["declared"]) == sorted(found["commands"])
    for name, help in found["commands"].items():
        summary = found["summaries"][name]
        assert help.startswith(summary + "\n\n"), (name, help)
        assert "Example" in help.partition("\n\n")[2], (name, help)


def test_help_imports_neither_typer_nor_the_commands():
    code = (
        "import json, sys\nbefore = set(sys.modules)\nsys.argv = ['mlkit', '--help']\n"
        "from mlkit.cli import main\ntry:\n    main()\nexcept SystemExit as done:\n    assert done.code == 0\n"
        "sys.stderr.write(json.dumps(sorted(set(sys.modules) - before)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=_env(None), capture_output=True, text=True, check=True
    )
    assert "Commands:" in result.stdout
    loaded = set(json.loads(result.stderr))
    assert "mlkit.cli.toplevel" in loaded
    commands = ("run", "runs", "compare", "experiments", "gpus", "env", "models", "gc", "report", "sweep")
    unwanted = {"typer", "click", "rich", "dataclasses", "pathlib", "shutil", "inspect", "bz2", "lzma"}
    unwanted |= {"mlkit.cli.output", "mlkit.cli.typer_app", "mlkit.cli.runflags"}
    unwanted |= {f"mlkit.cli.{name}" for name in commands}
    assert not {m for m in loaded if m.split(".")[0] in unwanted or m in unwanted}, sorted(loaded)


@pytest.mark.parametrize(
    "argv", [[], ["--help", "--traceback"], ["--traceback", "--help"], ["run", "--help"]]
)
def test_other_lines_stay_on_typer(argv):
    """Only `mlkit --help` and `mlkit -h` alone take the fast page."""
    code = (
        f"import sys\nsys.argv = ['mlkit', *{argv!r}]\nfrom mlkit.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\nsys.stderr.write(str('typer' in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], env=_env(None), capture_output=True, text=True)
    assert result.stderr.endswith("True"), result.stderr
    assert "Usage: mlkit" in result.stdout + result.stderr  # bare `mlkit`: on stderr, exit 2
