"""A value inside a script that another shell reads (`sh -c '...'`, `bash -c "..."`, `eval`, `ssh host
...`) is quoted for that shell too, at every depth; where quoting cannot protect it (arithmetic,
`[[ ]]`, variable names) only a number of a declared int/float parameter gets through.

Every accepted command is run for real in a sandbox whose files are checked afterwards.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlkit.errors import ProjectError
from mlkit.project import load_project, shell_argv
from mlkit.project.command import check_template, resolve_entry_point
from mlkit.project.model import EntryPoint, Parameter

HOSTILE = [
    "plain",
    "a b",
    "$(touch PWN)",
    "`touch PWN`",
    "x'; touch PWN; '",
    'x"; touch PWN; "',
    "a[$(touch PWN)]",
    "\\",
    "'\"'\"'",
    "a\ntouch PWN",
    "-c",
    "",
    "$HOME ~ * {a,b}",
    "\\'; touch PWN; \\'",
]

# Commands whose placeholder sits inside a script another shell reads; all must deliver the value.
NESTED = [
    "sh -c 'python echo.py {x}'",
    'bash -c "python echo.py --lr {x}"',
    'bash -c "python echo.py {x}" && true',
    "sh -c \"bash -c 'python echo.py {x}'\"",
    'true && sh -c "bash -c \'python echo.py \\"{x}\\"\'"',
    "eval python echo.py {x}",
    'eval "python echo.py {x}"',
    "env A=1 bash -o pipefail -c 'python echo.py {x} | cat'",
    "trap 'python echo.py {x}' EXIT",
    "sh -c 'python echo.py \"$1\" {x}' sh {x}",
    "bash -c \"eval 'python echo.py {x}'\"",
    'sh -c \'sh -c "sh -c \\"python echo.py {x}\\""\'',
    "bash -ec $'python echo.py {x}'",
    "sh -c \"python echo.py '{x}'\"",
    "sh -c 'python echo.py \"{x}\"'",
    "bash -c 'python echo.py $'\"'\"'{x}'\"'\"",
    "ssh -p 22 somehost python echo.py {x}",
    "ssh somehost 'python echo.py {x}'",
    "timeout 20 bash -xc 'python echo.py {x}' 2>/dev/null",
]

ECHO = "import json, sys\nprint(json.dumps(sys.argv[1:]))\n"
# ssh stand-in: like the real one, it joins the words after the host and gives them to a shell.
FAKE_SSH = '#!/bin/sh\nwhile [ "${1#-}" != "$1" ]; do case "$1" in -p) shift;; esac; shift; done\nshift\nexec sh -c "$*"\n'


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    directory = tmp_path / "proj"
    directory.mkdir()
    (directory / "echo.py").write_text(ECHO)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(FAKE_SSH)
    (bin_dir / "ssh").chmod(0o755)
    path = f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}"
    return directory, {**os.environ, "PATH": path, "HOME": str(tmp_path)}


def _ep(directory: Path, command: str, ptype: str = "string") -> EntryPoint:
    return EntryPoint("main", command, {"x": Parameter("x", ptype)}, directory, "MLproject")


def _run(result, cwd: Path, env: dict[str, str]) -> list[str]:
    argv = result.argv if result.argv is not None else shell_argv(result.shell)
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, (argv, done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _assert_clean(directory: Path) -> None:
    assert sorted(p.name for p in directory.iterdir()) == ["echo.py"]


@pytest.mark.parametrize("command", NESTED)
def test_values_in_inner_scripts_arrive_whole(sandbox, command: str) -> None:
    directory, env = sandbox
    ep = _ep(directory, command)
    assert check_template(command, ep.parameters) == []
    for value in HOSTILE:
        if value == "-c" and "$1" in command:  # the value is also bash's $0 there: fine either way
            continue
        received = _run(resolve_entry_point(ep, {"x": value}), directory, env)
        assert value in received, (command, value, received)
        _assert_clean(directory)


def test_issue_case_sh_c_with_command_substitution(sandbox) -> None:
    """The measured failure: the outer command has no shell syntax, the value went raw into sh's script."""
    directory, env = sandbox
    result = resolve_entry_point(_ep(directory, "sh -c 'python echo.py {x}'"), {"x": "$(touch PWN)"})
    assert result.argv == ["sh", "-c", "python echo.py '$(touch PWN)'"]
    assert _run(result, directory, env) == ["$(touch PWN)"]
    _assert_clean(directory)


def test_ordinary_values_keep_working(sandbox) -> None:
    directory, env = sandbox
    ep = EntryPoint(
        "main",
        'bash -c "python echo.py --lr {lr} --name {name}"',
        {"lr": Parameter("lr", "float"), "name": Parameter("name", "string")},
        directory,
        "MLproject",
    )
    result = resolve_entry_point(ep, {"lr": "0.01", "name": "run-1"})
    assert result.argv == ["bash", "-c", "python echo.py --lr 0.01 --name run-1"]
    assert _run(result, directory, env) == ["--lr", "0.01", "--name", "run-1"]


def test_extra_parameters_after_eval_are_quoted_for_eval(sandbox) -> None:
    directory, env = sandbox
    ep = EntryPoint("main", "eval python echo.py", {}, directory, "MLproject")
    received = _run(resolve_entry_point(ep, {"e": "$(touch PWN)"}), directory, env)
    assert received == ["--e", "$(touch PWN)"]
    _assert_clean(directory)


# Where quoting does not protect: refused for string parameters when the file is read, and
# accepted for int/float parameters only with a plain number.
NUMERIC_ONLY = [
    ("[[ {x} -eq 1 ]] || true", "inside [[ ]]"),
    ("(( {x} > 0 )) || true", "inside (( ))"),
    ("echo $(( {x} ))", "inside $(( ))"),
    ("true; let y={x}", "an argument of let"),
    ("declare -i n; n={x}", "declared with -i"),
    ("a[{x}]=1", "an array subscript"),
    ('bash -c "[[ {x} -eq 1 ]]" && true', "inside [[ ]] in the script of bash -c"),
    ("sh -c 'echo $(( {x} ))'", "inside $(( )) in the script of sh -c"),
    ("bash -c '(( {x} > 0 ))'", "inside (( )) in the script of bash -c"),
    ("bash -c 'declare -i n; n={x}; echo $n'", "declared with -i"),
    ("bash -c 'arr=([{x}]=1)'", "an array subscript"),
    ("for (( i=0; i<{x}; i++ )); do :; done", "inside (( ))"),
    ('eval "let n={x}"', "in the script of eval"),
    ("true; unset {x}", "a variable name given to unset"),
    ('sh -c "python echo.py {x} $HOME"', "whose text the outer shell computes"),
    ("fish -c 'echo {x}'", "quoting differs"),
    ("ssh -o ProxyCommand={x} host true", "an option of ssh"),
    (
        "sh -c \"bash -c 'echo \\$(( {x} ))'\"",
        "inside $(( )) in the script of bash -c in the script of sh -c",
    ),
]


@pytest.mark.parametrize(("command", "why"), NUMERIC_ONLY)
def test_string_parameter_where_quoting_cannot_protect_is_refused_on_load(
    tmp_path: Path, command: str, why: str
) -> None:
    (tmp_path / "MLproject").write_text(
        json.dumps({"entry_points": {"main": {"command": command, "parameters": {"x": "string"}}}})
    )
    with pytest.raises(ProjectError) as info:
        load_project(tmp_path)
    message = info.value.message
    assert "entry_points.main.command" in message and "{x} (type string)" in message and why in message
    assert "\n" not in message


@pytest.mark.parametrize(("command", "why"), NUMERIC_ONLY)
def test_numbers_pass_and_hostile_numbers_do_not(sandbox, command: str, why: str) -> None:
    directory, _ = sandbox
    for ptype in ("int", "float"):
        ep = _ep(directory, command, ptype)
        assert check_template(command, ep.parameters) == []
        result = resolve_entry_point(ep, {"x": "3"})
        assert "3" in (result.shell or " ".join(result.argv or []))
        for bad in ("a[$(touch PWN)]", "inf", "nan", "1+1"):
            with pytest.raises(ProjectError) as info:
                resolve_entry_point(ep, {"x": bad})
            assert "parameters.x" in info.value.message or "parameter 'x'" in info.value.message


@pytest.mark.parametrize(
    ("command", "special"),
    [
        ("bash -c 'cat <<EOF\n{x}\nEOF'", "here-document"),
        ("bash -c 'echo `echo {x}`'", "`...`"),
        ("sh -c 'echo ${{HOME:-{x}}}'", "${...}"),
        ("sh -c 'python echo.py $'\"'\"'{x}'\"'\"", "dash and bash"),
        ("sh -c 'echo \\{x}'", "backslash"),
    ],
)
def test_unquotable_inner_positions_are_refused_for_every_type(command: str, special: str) -> None:
    for ptype in ("string", "int"):
        problems = check_template(command, {"x": Parameter("x", ptype)})
        assert problems and special in problems[0][1] and "in the script of" in problems[0][1]


def test_a_value_that_would_become_an_option_of_a_shell_is_refused(sandbox) -> None:
    directory, _ = sandbox
    ep = _ep(directory, "bash {x} 'touch PWN'")
    with pytest.raises(ProjectError, match="would be read as an option"):
        resolve_entry_point(ep, {"x": "-c"})
    assert resolve_entry_point(ep, {"x": "script.sh"}).argv == ["bash", "script.sh", "touch PWN"]


# The issue's measurement, larger: wrappers x quoting x hostile values, each run for real.
WRAPPERS = ["sh -c {q}", "bash -c {q} && true", "eval {q}", "bash -c {q}; true", 'sh -c "bash -c {q}"']
INNER = ["python echo.py {x}", "python echo.py '{x}'", 'python echo.py "{x}"', "[[ {x} -eq 1 ]]", "(( {x} > 0 ))",
         "echo $(( {x} ))", "let n={x}", "python echo.py --v={x} | cat"]  # fmt: skip
ATTACKS = [
    "$(touch PWN)",
    "a[$(touch PWN)]",
    "x'; touch PWN; '",
    'x"; touch PWN; "',
    "`touch PWN`",
    "1; touch PWN",
]


def _wrap(wrapper: str, inner: str) -> str | None:
    if '"' in wrapper:  # the inner script goes into '...' inside "..."
        if "'" in inner:
            return None
        return wrapper.replace("{q}", "'" + inner + "'")
    if "'" in inner:
        return wrapper.replace("{q}", '"' + inner.replace('"', '\\"') + '"')
    return wrapper.replace("{q}", "'" + inner + "'")


def test_hostile_sweep_injects_nothing(sandbox) -> None:
    directory, env = sandbox
    cases = 0
    for wrapper, inner, attack in itertools.product(WRAPPERS, INNER, ATTACKS):
        command = _wrap(wrapper, inner)
        if command is None:
            continue
        cases += 1
        ep = _ep(directory, command)
        try:
            result = resolve_entry_point(ep, {"x": attack})
        except ProjectError as exc:
            assert "\n" not in exc.message
            continue
        argv = result.argv if result.argv is not None else shell_argv(result.shell)
        subprocess.run(argv, cwd=directory, env=env, capture_output=True, timeout=30)
        assert not (directory / "PWN").exists(), (command, attack)
    assert cases >= 128
