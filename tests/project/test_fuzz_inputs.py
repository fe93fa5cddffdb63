"""Hostile MLproject / conda.yaml / python_env.yaml files fail fast and small: one MlkitError line,
never a traceback, a hang or a memory blow-up (the measured cases of issue 12, then a seeded fuzzer)."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mlkit.env.ref import EnvRef
from mlkit.env.spec import load_spec
from mlkit.errors import EnvSpecError, MlkitError, ProjectError
from mlkit.project.load import load_project

from helpers import run_mlkit

BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)


def _conda(tmp: Path, text: str | bytes) -> EnvRef:
    path = tmp / "conda.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return EnvRef(kind="conda", path=path)


def _python(tmp: Path, text: str | bytes) -> EnvRef:
    path = tmp / "python_env.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return EnvRef(kind="python", path=path)


def _mlproject(tmp: Path, text: str | bytes) -> Path:
    (tmp / "MLproject").write_bytes(text if isinstance(text, bytes) else text.encode())
    return tmp


def _one_line(exc: MlkitError) -> str:
    assert "\n" not in exc.message, exc.message
    return exc.message


@pytest.mark.parametrize(
    ("make", "text", "expected"),
    [
        (_conda, b"name: x\ndependencies: [caf\xe9]\n", "conda.yaml: line 2: byte 0xe9 is not UTF-8"),
        (
            _python,
            b"python: '3.11'\ndependencies: [\xe9]\n",
            "python_env.yaml: line 2: byte 0xe9 is not UTF-8",
        ),
        (_conda, ".nan: x\n", "conda.yaml: nan: keys must be strings"),
        (_conda, "variables: {1: x}\n", "conda.yaml: variables.1: keys must be strings"),
        (_python, "? [a]\n: b\n", "python_env.yaml: line"),
        (_conda, "name: x\x00\n", "conda.yaml: line 1: the file contains a NUL byte"),
        (_conda, BOMB + "dependencies: *i\n", "alias bomb"),
        (_conda, BOMB + "variables: {v: *i}\n", "alias bomb"),
        (_conda, "dependencies: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than 64"),
        (_conda, "a: &a [*a]\n", "contains it"),
        (_conda, "dependencies:\n  - pip:\n    - -r /dev/zero\n", "not a regular file"),
        (_conda, "dependencies:\n  - pip:\n    - -r " + "x" * 6000 + "\n", "6000 characters"),
        (_python, "dependencies: ['-r \x00']\n", "line 1: the file contains a NUL byte"),
        (_python, 'dependencies: ["-r \\0"]\n', "the file name contains a NUL byte"),
    ],
)
def test_measured_env_file_cases(tmp_path: Path, make, text, expected: str) -> None:
    start = time.monotonic()
    with pytest.raises(EnvSpecError) as info:
        load_spec(tmp_path, make(tmp_path, text))
    assert time.monotonic() - start < 5
    assert expected in _one_line(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('conda_env: "\\0"\n', "conda_env: the file name contains a NUL byte"),
        ("conda_env: " + "x" * 6000 + "\n", "conda_env: the file name is 6000 characters long"),
        (BOMB + "entry_points: {main: {command: c, parameters: {p: {type: *i}}}}\n", "alias bomb"),
        ("entry_points: {main: {command: 'python a.py " + "x" * (5 << 20) + "'}}\n", "more than the 1048576"),
        (b"name: caf\xe9\n", "MLproject: line 1: byte 0xe9 is not UTF-8"),
        ("entry_points: {main: {command: c, parameters: {.inf: x}}}\n", "keys must be strings"),
    ],
)
def test_measured_mlproject_cases(tmp_path: Path, text, expected: str) -> None:
    start = time.monotonic()
    with pytest.raises(ProjectError) as info:
        load_project(_mlproject(tmp_path, text))
    assert time.monotonic() - start < 5
    assert expected in _one_line(info.value)


SEEDS = {
    "MLproject": textwrap.dedent("""\
        name: demo
        conda_env: conda.yaml
        entry_points:
          main:
            parameters:
              lr: {type: float, default: 0.1}
              n: int
              name: {type: string, default: "a b"}
            command: "python train.py --lr {lr} -n {n} --name {name}"
          other:
            command: "sh -c 'python a.py {x}' && true"
            parameters: {x: string}
        """),
    "conda.yaml": textwrap.dedent("""\
        name: demo
        channels: [conda-forge]
        dependencies:
          - python=3.11
          - numpy>=1.24
          - pip
          - pip: [requests, -r req.txt]
        variables: {A: "1"}
        """),
    "python_env.yaml": textwrap.dedent("""\
        python: "3.11"
        build_dependencies: [pip]
        dependencies: [numpy, -r req.txt]
        """),
}
SNIPPETS = ["&a ", "*a", "*zz", "[", "]", "{", "}", ": ", "- ", "\t", "\x00", "\xe9", "!!python/object ", ".nan",
            "? ", "'", '"', "\n  ", "<<: *a", "-r /dev/zero", "-r " + "y" * 5000, "{x}", "$(( {n} ))", "%", "\\",
            "\ufeff", "---\n", "...", "|\n", ">-\n", "!!binary AAAA", "1e999", "~", "@", "`"]  # fmt: skip


def _mutate(rng: random.Random, text: str) -> bytes:
    data = text
    for _ in range(rng.randint(1, 6)):
        at = rng.randrange(len(data) + 1)
        kind = rng.random()
        if kind < 0.5:
            data = data[:at] + rng.choice(SNIPPETS) + data[at:]
        elif kind < 0.75:
            data = data[:at] + data[at + rng.randint(1, 8) :]
        else:
            data = data[:at] + chr(rng.randrange(1, 0x3000)) + data[at:]
    raw = data.encode("utf-8", "surrogatepass")
    if rng.random() < 0.1:
        raw = raw.replace(b"\xc3\xa9", b"\xe9")  # a latin-1 byte
    return raw


def test_seeded_fuzz_in_process(tmp_path: Path) -> None:
    """1,200 mutated files through the core loaders: only MlkitError, each fast."""
    rng = random.Random(12)
    (tmp_path / "req.txt").write_text("numpy\n")
    cases = slow = 0
    for i in range(1200):
        name = list(SEEDS)[i % 3]
        case = tmp_path / f"c{i}"
        case.mkdir()
        (case / "req.txt").write_text("requests\n")
        (case / "conda.yaml").write_text(SEEDS["conda.yaml"])
        (case / name).write_bytes(_mutate(rng, SEEDS[name]))
        start = time.monotonic()
        try:
            if name == "MLproject":
                project = load_project(case)
                for ep in project.entry_points.values():
                    try:
                        ep.resolve({"n": "1", "x": "$(touch PWN)", "lr": "0.1"})
                    except MlkitError as exc:
                        _one_line(exc)
            else:
                kind = "conda" if name == "conda.yaml" else "python"
                load_spec(case, EnvRef(kind=kind, path=case / name))  # type: ignore[arg-type]
        except MlkitError as exc:
            _one_line(exc)
        slow += time.monotonic() - start > 2
        cases += 1
        assert not (Path.cwd() / "PWN").exists()
    assert cases == 1200 and slow == 0


MEMORY_SCRIPT = """
import sys
from pathlib import Path
from mlkit.errors import MlkitError
from mlkit.project.load import load_project
from mlkit.env.spec import load_spec
from mlkit.env.ref import EnvRef
d = Path(sys.argv[1])
for sub in sorted(d.iterdir()):
    try:
        if (sub / "MLproject").exists():
            load_project(sub)
        else:
            load_spec(sub, EnvRef(kind="conda", path=sub / "conda.yaml"))
    except MlkitError:
        pass
# VmHWM, not ru_maxrss: ru_maxrss survives exec, so it would report the (large) pytest
# process this script was forked from rather than this process's own peak.
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""


def test_bombs_stay_small_in_memory(tmp_path: Path) -> None:
    for i, text in enumerate(
        [BOMB + "dependencies: *i\n", BOMB + "variables: {v: *i}\n", "a: " + "[" * 100000]
    ):
        (tmp_path / f"e{i}").mkdir()
        (tmp_path / f"e{i}" / "conda.yaml").write_text(text)
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "MLproject").write_text(
        BOMB + "entry_points: {main: {command: c, parameters: {p: *i}}}\n"
    )
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "MLproject").write_text(
        "entry_points: {main: {command: '" + "python a.py {{x}} " * 50000 + "'}}\n"
    )
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) < 500 * 1024  # KiB
    assert time.monotonic() - start < 30


BAD_CONDA = "name: x\ndependencies: [caf\xe9]\n".encode("latin-1")


def test_dry_run_reads_the_env_file_like_the_run(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "MLproject").write_text(
        "entry_points: {main: {command: python a.py}}\nconda_env: conda.yaml\n"
    )
    (project / "conda.yaml").write_bytes(BAD_CONDA)
    dry = run_mlkit(
        "run", str(project), "--dry-run", "--env-manager", "local", "--gpus", "none", cwd=tmp_path
    )
    real = run_mlkit("run", str(project), "--env-manager", "local", "--gpus", "none", cwd=tmp_path)
    env = run_mlkit("env", "create", str(project), cwd=tmp_path)
    for done in (dry, real, env):
        assert done.returncode == 2, done.stderr
        assert "conda.yaml: line 2: byte 0xe9 is not UTF-8" in done.stderr
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "mlruns").exists()


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("conda.yaml", ".nan: x\n"),
        ("conda.yaml", BOMB + "dependencies: *i\n"),
        ("python_env.yaml", "dependencies: ['-r /dev/zero']\n"),
        ("MLproject", BOMB + "entry_points: *i\n"),
    ],
)
def test_cli_hostile_files_exit_2_without_traceback(tmp_path: Path, name: str, text: str) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    if name != "MLproject":
        (project / "MLproject").write_text("entry_points: {main: {command: python a.py}}\n")
    (project / name).write_text(text)
    for args in (("run", str(project), "--dry-run"), ("env", "create", str(project))):
        done = run_mlkit(*args, cwd=tmp_path, timeout=60)
        assert done.returncode == 2, (args, done.stderr)
        assert "Traceback" not in done.stderr and name in done.stderr
