"""Hostile parameter values run nothing: each one reaches the program as exactly one argv item.

Every command is run for real (argv directly, shell strings with `bash -c`), with HOME pointing at a
directory holding a canary file, and a script that prints the arguments it received. Each entry
point takes every hostile value at once (one placeholder per value, plus one extra per value).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlkit.project import load_project, shell_argv

HOSTILE = [
    "; rm -rf ~",
    "$(touch pwned)",
    "`touch pwned`",
    "x' ; touch pwned ; echo '",
    'x" ; touch pwned ; echo "',
    "a\ntouch pwned\n",
    "&& touch pwned",
    "| touch pwned",
    "> pwned",
    "$'\\x41' ${HOME} $HOME * ~ {a,b}",
    "\\'\\\"\\\\",
    "--flag=$(touch pwned)",
    "",
    " leading and trailing ",
    "-rf",
    "{v0}",
]

ECHO = "import json, sys\nprint(json.dumps(sys.argv[1:]))\n"

# entry point -> (command prefix, how each placeholder is written, whether a shell is needed)
TEMPLATES = {
    "bare": ("python echo.py", "{p}", False),
    "double": ("python echo.py", '"{p}"', False),
    "single": ("python echo.py", "'{p}'", False),
    "inside_word": ("python echo.py", "'<'{p}\">\"", False),
    "bare_sh": ("true && python echo.py", "{p}", True),
    "double_sh": ("echo | python echo.py", '"{p}"', True),
    "single_sh": ("true ; python echo.py", "'{p}'", True),
    "ansi_sh": ("cd . && python echo.py", "$'{p}'", True),
    "subst_sh": ("python echo.py", '"$(printf %s "{p}")"', True),
    "herestring_sh": ("cat <<< {v0} >/dev/null; python echo.py", "{p}", True),
}


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The project, and an environment whose HOME holds a canary file."""
    import yaml

    names = [f"v{i}" for i in range(len(HOSTILE))]
    entry_points = {}
    for entry, (prefix, piece, _) in TEMPLATES.items():
        command = " ".join([prefix] + [piece.replace("{p}", "{" + n + "}") for n in names])
        entry_points[entry] = {"parameters": dict.fromkeys(names, "string"), "command": command}
    directory = tmp_path / "proj"
    directory.mkdir()
    (directory / "MLproject").write_text(yaml.safe_dump({"entry_points": entry_points}))
    (directory / "echo.py").write_text(ECHO)
    (directory / "echo.sh").write_text('exec python echo.py "$@"\n')
    home = tmp_path / "home"
    home.mkdir()
    (home / "canary").write_text("still here\n")
    env = {**os.environ, "HOME": str(home), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return directory, env


def run(result, cwd: Path, env: dict[str, str]) -> list[str]:
    argv = result.argv if result.argv is not None else shell_argv(result.shell)
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def assert_nothing_ran(directory: Path, env: dict[str, str]) -> None:
    assert sorted(p.name for p in directory.iterdir()) == ["MLproject", "echo.py", "echo.sh"]
    assert (Path(env["HOME"]) / "canary").read_text() == "still here\n"
    assert not (Path.cwd() / "pwned").exists()


@pytest.mark.parametrize("entry", list(TEMPLATES))
def test_hostile_values_are_one_argv_item_each(sandbox, entry: str) -> None:
    directory, env = sandbox
    declared = {f"v{i}": value for i, value in enumerate(HOSTILE)}
    extras = {f"e{i}": value for i, value in enumerate(HOSTILE)}
    result = load_project(directory).entry_point(entry).resolve({**declared, **extras})
    assert (result.shell is not None) is TEMPLATES[entry][2]
    assert result.params == {**declared, **extras}  # the raw values, to log
    received = run(result, directory, env)
    if entry == "subst_sh":  # $(...) drops trailing newlines: the shell's rule, not an injection
        expected = [v.rstrip("\n") for v in HOSTILE]
    elif entry == "inside_word":
        expected = [f"<{v}>" for v in HOSTILE]
    else:
        expected = list(HOSTILE)
    assert received == expected + [item for key, value in extras.items() for item in (f"--{key}", value)]
    assert_nothing_ran(directory, env)


def test_hostile_values_to_script_entry_points(sandbox, monkeypatch) -> None:
    directory, env = sandbox
    project = load_project(directory)
    params = {f"e{i}": value for i, value in enumerate(HOSTILE)}
    flat = [item for key, value in params.items() for item in (f"--{key}", value)]
    assert run(project.entry_point("echo.py").resolve(params), directory, env) == flat
    monkeypatch.setenv("SHELL", "/bin/bash")
    result = project.entry_point("echo.sh").resolve(params)
    assert result.argv == ["/bin/bash", "echo.sh", *flat]
    assert run(result, directory, env) == flat
    assert_nothing_ran(directory, env)


ATOMS = [
    "echo", "printf '%s\\n'", "{p}", "'{p}'", '"{p}"', "$'{p}'", '"$(echo {p})"', "$(echo {p})",
    ";", "|", "&&", "x{p}y", "'a'{p}", '"a"{p}"b"', "--k={p}", "(echo {p})", "$((1))", '"$HOME"',
    "cat <<< {p}", ">/dev/null", "# comment {p}", "{{a,b}}", "*", "~", "X=1", "\\;", "'\\'", '"\\""', "`echo {p}`", "${{X:-{p}}}",
]  # fmt: skip


def test_random_templates_never_run_a_value(tmp_path: Path) -> None:
    """Templates built at random from shell pieces either load and run nothing from the values,
    or are refused when loaded."""
    import random

    import yaml

    from mlkit.errors import ProjectError

    rng = random.Random(20261122)
    home = tmp_path / "home"
    home.mkdir()
    (home / "canary").write_text("still here\n")
    env = {**os.environ, "HOME": str(home)}
    ran = refused = 0
    for case in range(120):
        atoms = [rng.choice(ATOMS) for _ in range(rng.randint(2, 7))]
        names = []
        for i, atom in enumerate(atoms):
            if "{p}" in atom:
                names.append(f"p{i}")
                atoms[i] = atom.replace("{p}", "{" + f"p{i}" + "}")
        directory = tmp_path / f"case{case}"
        directory.mkdir()
        mlproject = {
            "entry_points": {
                "main": {"parameters": dict.fromkeys(names, "string"), "command": "echo " + " ".join(atoms)}
            }
        }
        (directory / "MLproject").write_text(yaml.safe_dump(mlproject))
        try:
            result = (
                load_project(directory)
                .entry_point("main")
                .resolve({n: HOSTILE[j % len(HOSTILE)] for j, n in enumerate(names)})
            )
        except ProjectError:
            refused += 1
            continue
        ran += 1
        argv = result.argv if result.argv is not None else shell_argv(result.shell)
        subprocess.run(
            argv, cwd=directory, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=30
        )
        assert sorted(p.name for p in directory.iterdir()) == ["MLproject"], mlproject
        assert (home / "canary").exists(), mlproject
    assert ran > 60 and refused > 0
