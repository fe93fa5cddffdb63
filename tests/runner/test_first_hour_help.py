"""Every group and command's `--help` (issue 14, item 9): a whole description (never cut with
"..."), at least one example, a usage line without `{project_dir}`; and the did-you-mean for a
misspelt `mlkit run` flag."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from helpers import run_mlkit


def _paths() -> list[list[str]]:
    code = (
        "import json, typer.main\nfrom mlkit.cli import build_app\n"
        "def walk(c, p):\n    yield p\n    for n, s in (getattr(c, 'commands', None) or {}).items():\n"
        "        yield from walk(s, p + [n])\n"
        "print(json.dumps(list(walk(typer.main.get_command(build_app()), []))))"
    )
    import json

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


PATHS = _paths()


def test_every_command_is_walked():
    assert ["run"] in PATHS and ["runs", "show"] in PATHS and ["models", "promote"] in PATHS
    assert len(PATHS) > 30


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "mlkit")
def test_help_is_whole_and_has_an_example(path):
    result = run_mlkit(*path, "--help", env={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    text = result.stdout
    usage, _, body = text.partition("\n\n")
    assert usage.startswith("Usage: mlkit") and "{" not in usage, usage
    description = body.split("\n\n")[0]
    assert description.strip() and not description.rstrip().endswith(("...", "…")), description
    assert re.search(r"^\s*Examples?\b[^:\n]*:", text, re.M), f"no example in mlkit {' '.join(path)} --help"
    commands = text.partition("\nCommands:\n")[2]
    assert "..." not in commands and "…" not in commands, commands


def test_misspelt_run_flag_suggests_the_real_one(tmp_path):
    result = run_mlkit("run", str(tmp_path), "--dryrun")
    assert result.returncode == 2
    assert "no such option: --dryrun" in result.stderr
    assert "did you mean --dry-run" in result.stderr, result.stderr
