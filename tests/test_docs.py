"""Docs under test: every command is in the README and has help, every documented `mlkit ...`
command names a real command path and only flags that command has, every docs/ link resolves."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from mlkit.cli import app

from helpers import REPO

ROOT = typer.main.get_command(app)
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def command_paths() -> list[tuple[str, ...]]:
    """Every leaf command of the CLI, e.g. ("runs", "list")."""

    def walk(command, path=()):
        children = getattr(command, "commands", None)
        if not children:
            return [path]
        return [leaf for name, child in sorted(children.items()) for leaf in walk(child, (*path, name))]

    return walk(ROOT)


# --- finding the documented commands -------------------------------------------------------------

_FENCE = re.compile(r"^\s*```(\w*)")
_SPAN = re.compile(r"`([^`]+)`")
# Where a shell line's command ends, outside quotes: a comment, a pipe, a redirection, the next
# command, the end of a `$(...)`.
_SHELL_END = re.compile(r"\s#|\s\|\s|\s>>?\s|&&|;|\)")

# Commands the docs show on purpose as ones mlkit refuses.
REFUSED_ON_PURPOSE = {"mlkit run projects/cnn --epochs 3"}  # mlproject.md: a param given as a flag


def _cut(text: str) -> str:
    """`text` up to the first unquoted end of a shell command."""
    quote = None
    for i, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif _SHELL_END.match(text, i):
            return text[:i]
    return text


def _shell_commands(line: str) -> list[str]:
    """The `mlkit ...` command of a shell line in a code block (after a `$ ` prompt, a cron
    schedule, `eval "$(` ...), cut where the shell command ends."""
    match = re.search(r"(?:^|[\s(])mlkit\s", line)
    if match is None:
        return []
    return [_cut(line[match.start() :].lstrip(" (")).strip()]


def _span_commands(line: str) -> list[str]:
    """The inline code spans of a prose or table line that show a command: "`mlkit runs list` /
    `show` / `logs [--follow]`" is three commands, the later spans continuing the first one's group."""
    commands: list[str] = []
    group: str | None = None
    for match in _SPAN.finditer(line):
        span = match.group(1).strip()
        if span.startswith("mlkit "):
            commands.append(span)
            words = span.split()
            group = " ".join(words[:2]) if len(words) > 2 else None
        elif group and line[: match.start()].rstrip().endswith("/") and re.match(r"[a-z]", span):
            commands.append(f"{group} {span}")
    return commands


def documented_commands(doc: Path) -> list[tuple[int, str]]:
    """Every `mlkit ...` command a Markdown file shows, with its line number."""
    found: list[tuple[int, str]] = []
    language: str | None = None  # inside a fenced block: its language ("" when none)
    for number, line in enumerate(doc.read_text().splitlines(), 1):
        fence = _FENCE.match(line)
        if fence:
            language = None if language is not None else fence.group(1)
            continue
        if language is None:
            found += [(number, command) for command in _span_commands(line)]
        elif language in ("", "bash", "sh", "console", "shell"):
            found += [(number, command) for command in _shell_commands(line)]
    return found


# --- checking one against the real CLI -----------------------------------------------------------


def _words(command: str) -> list[str]:
    try:
        return shlex.split(command)
    except ValueError:  # an unbalanced quote in a shortened example
        return command.split()


def _flags(word: str) -> list[str]:
    """The flags a usage word names: `--json`, `[--csv|--json]`, `--older-than=30d`, `-P`."""
    return [
        alt.split("=", 1)[0]
        for alt in word.strip("[](),.").split("|")
        if re.fullmatch(r"--?[A-Za-z][\w-]*(=.*)?", alt)
    ]


def _option_names(command) -> set[str]:
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)} | {"--help"}


def check_command(command: str) -> list[str]:
    """What is wrong with one documented command: an unknown command path, or a flag the command
    it reaches does not take. Empty when the real CLI accepts its shape."""
    words = _words(command)[1:]  # past "mlkit"
    node = ROOT
    path = ["mlkit"]
    while getattr(node, "commands", None) and words and not words[0].startswith("["):
        if words[0].startswith("-") and len(words) > 1 and words[0] in _option_names(node):
            words.pop(0)  # a group's own flag, `mlkit --traceback run ...`
            continue
        if words[0].startswith("-"):
            break
        default = getattr(node, "default_command", None)
        if default and words[0] not in node.commands and words[0] != "...":
            words.insert(0, default)  # `mlkit sweep DIR ...` is `mlkit sweep start DIR ...`
        word = words.pop(0)
        if word == "...":  # `mlkit env ...`: any of the group's commands
            return []
        names = word.split("/")  # `mlkit env create/list/prune`
        missing = [name for name in names if name not in node.commands]
        if missing:
            return [f"`{' '.join(path)}` has no command {missing[0]!r}"]
        if len(names) > 1:
            return [problem for name in names for problem in check_command(" ".join([*path, name, *words]))]
        node = node.commands[word]
        path.append(word)
    known = _option_names(node)
    return [
        f"`{' '.join(path)}` has no option {flag}"
        for word in words
        for flag in _flags(word)
        if flag not in known
    ]


# --- the tests -----------------------------------------------------------------------------------


README_COMMANDS = documented_commands(REPO / "README.md")


def _command_path(command: str) -> tuple[str, ...]:
    """The leading command words of a documented command (no flags or arguments checked)."""
    words, node, path = _words(command)[1:], ROOT, ()
    while getattr(node, "commands", None) and words:
        default = getattr(node, "default_command", None)
        if words[0] not in node.commands:
            if not default or words[0].startswith("-"):
                break
            words.insert(0, default)  # `mlkit sweep DIR ...` is `mlkit sweep start DIR ...`
        path += (words[0],)
        node = node.commands[words.pop(0)]
    return path


@pytest.mark.parametrize("path", command_paths(), ids=" ".join)
def test_every_command_is_in_the_readme(path: tuple[str, ...]):
    shown = {_command_path(command) for _, command in README_COMMANDS}
    assert path in shown, f"README never shows `mlkit {' '.join(path)}` as a command"


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: doc.name)
def test_documented_commands_match_the_cli(doc: Path):
    commands = documented_commands(doc)
    problems = [
        f"{doc.name}:{number}: {command!r}: {problem}"
        for number, command in commands
        for problem in check_command(command)
        if command not in REFUSED_ON_PURPOSE
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "command, problem",
    [
        ("mlkit runs lst", "has no command 'lst'"),
        ("mlkit runs list --colums x", "has no option --colums"),
        ("mlkit env create/lisst", "has no command 'lisst'"),
        ("mlkit runs compare A B [--csv|--jsn]", "has no option --jsn"),
        ("mlkit run . --dry-run --json -P a=1 -e main", None),
        ("mlkit --install-completion", None),
        ("mlkit --traceback rn", "has no command 'rn'"),
    ],
)
def test_the_command_check_catches_drift(command: str, problem: str | None):
    problems = check_command(command)
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0], problems


def test_readme_lines_find_their_commands():
    line = "| `mlkit runs list` / `show` / `logs [--follow]` | look at runs (`mlkit gc`) |"
    assert _span_commands(line) == [
        "mlkit runs list",
        "mlkit runs show",
        "mlkit runs logs [--follow]",
        "mlkit gc",
    ]
    assert _shell_commands("0 2 * * *  mlkit run ~/p --json >> ~/n.log") == ["mlkit run ~/p --json"]
    assert _shell_commands("mlkit runs list -x cnn    # pick columns") == ["mlkit runs list -x cnn"]
    assert _shell_commands("mlkit runs show <run-id>   # one run") == ["mlkit runs show <run-id>"]
    assert _shell_commands("mlkit runs list -f 'metrics.a > 0.9' | head") == [
        "mlkit runs list -f 'metrics.a > 0.9'"
    ]
    assert _shell_commands('eval "$(mlkit --show-completion)"') == ["mlkit --show-completion"]
    assert check_command("mlkit run projects/cnn --epochs 3") != []  # REFUSED_ON_PURPOSE still is


@pytest.mark.parametrize("path", command_paths(), ids=" ".join)
def test_every_command_has_help(path: tuple[str, ...]):
    result = subprocess.run([sys.executable, "-m", "mlkit", *path, "--help"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Usage: mlkit " + " ".join(path) in " ".join(result.stdout.split())


def test_doc_links_resolve():
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)\)", doc.read_text()):
            if "://" not in target:
                assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"
