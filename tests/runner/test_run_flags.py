"""`mlkit run`'s flags are declared once (mlkit.cli.runflags): the typer command is built from the
table, and a plain command line is read without typer. These tests hold the two readers to the
same answer: for every line the fast reader accepts, it gives `run_command` exactly what the typer
command gives it; every other line is left to typer (issue 20: typer was ~40 ms of every run)."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from mlkit.cli import run as run_module
from mlkit.cli import runflags
from mlkit.cli.typer_app import build_app


def _typer_values(monkeypatch, args: list[str], env: dict[str, str] | None = None) -> dict:
    """What the typer command passes to run_command for `mlkit run ARGS`."""
    seen: dict = {}

    def record(project_dir, **values):
        seen.update(project_dir=project_dir, **values)

    monkeypatch.setattr(run_module, "run_command", record)
    result = CliRunner().invoke(build_app(("run",)), ["run", *args], env=env or {}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    seen.pop("extra_args")
    seen.pop("spellings")
    return seen


def test_the_typer_command_is_built_from_the_table():
    command = typer.main.get_command(build_app(("run",))).commands["run"]  # type: ignore[attr-defined]
    params = {p.name: p for p in command.params}
    assert list(params) == ["project_dir", *(f.name for f in runflags.FLAGS)]
    kinds = {str: "STRING", int: "INT", float: "FLOAT", bool: "BOOL", list: "STRING"}
    for flag in runflags.FLAGS:
        param = params[flag.name]
        assert param.opts == list(flag.decls), flag.name
        assert not param.secondary_opts, flag.name  # no --no-X spelling the fast reader would miss
        assert repr(param.type) == kinds[flag.kind], flag.name
        assert param.multiple == (flag.kind is list), flag.name
        assert bool(getattr(param, "is_flag", False)) == (flag.kind is bool), flag.name
        assert param.default == flag.default, flag.name
        assert param.envvar == flag.envvar, flag.name
    keywords = set(inspect.signature(run_module.run_command).parameters)
    assert keywords == {"project_dir", "extra_args", "spellings", *(f.name for f in runflags.FLAGS)}


PLAIN = [
    ["."],
    ["proj", "--env-manager", "local", "--gpus", "none", "--system-metrics-interval", "0"],
    ["proj", "-e", "train", "-P", "lr=0.1", "-P", "width=32", "--param-list", "x=a=b", "--strict-params"],
    ["--gpus", "1", "proj", "--gpus", "2", "--wait", "10m", "--min-free-memory", "20GiB"],
    ["proj", "--run-name=--looks-like-a-flag", "--experiment-name", "-dash", "--json", "--dry-run"],
    ["proj", "--max-gpu-util", "50", "--exclude-busy", "--nnodes", "2", "--node-rank", "1"],
    ["proj", "--rdzv-endpoint", "host:29500", "--nproc-per-node", "4", "--system-metrics-interval", "1e-1"],
    ["proj", "--lock", "nightly", "--lock-wait", "5m", "--skip-if-done", "--on-finish", "echo done"],
    [
        "proj",
        "--container-engine",
        "podman",
        "--build-image",
        "-A",
        "shm-size=8g",
        "--docker-args",
        "privileged",
    ],
    ["proj", "--backend", "slurm", "-c", "partition=gpu", "--nodes", "2", "--follow", "-b", "slurm"],
    ["proj", "--run-id", "abc123", "--store", "/tmp/s", "--experiment-id", "7", "--conda-exe", "micromamba"],
    ["proj", "--timeout", "90s", "--on-finish", ""],
    ["--", "-project-with-a-dash"],
]


@pytest.mark.parametrize("args", PLAIN, ids=lambda a: " ".join(a)[:40])
def test_a_plain_line_reads_the_same_without_typer(monkeypatch, args):
    monkeypatch.delenv("MLKIT_ON_FINISH", raising=False)
    fast = runflags.parse(args)
    assert fast is not None
    assert fast == _typer_values(monkeypatch, args)


def test_an_environment_default_reads_the_same(monkeypatch):
    monkeypatch.setenv("MLKIT_ON_FINISH", "notify-send done")
    fast = runflags.parse(["proj"])
    assert fast is not None and fast["on_finish"] == "notify-send done"
    assert fast == _typer_values(monkeypatch, ["proj"], env={"MLKIT_ON_FINISH": "notify-send done"})


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--help"],
        ["proj", "-h"],
        ["proj", "--gpu", "1"],  # misspelt: typer's command answers with the nearest flag
        ["proj", "--epochs", "3"],  # a project parameter: answered with the -P form
        ["proj", "-Plr=0.1"],  # glued short option
        ["proj", "--strict-params=1"],  # a flag given a value
        ["proj", "--nnodes", "two"],  # click refuses the value
        ["proj", "--max-gpu-util", "lots"],
        ["proj", "--timeout"],  # no value
        ["proj", "extra"],  # a second positional
        [""],
    ],
    ids=repr,
)
def test_anything_else_is_left_to_typer(args):
    assert runflags.parse(args) is None


def test_traceback_in_the_environment_is_left_to_typer(monkeypatch):
    monkeypatch.setenv("MLKIT_TRACEBACK", "1")
    assert runflags.parse(["proj"]) is None


def _mlkit(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    code = (
        f"import sys, json; sys.argv = ['mlkit', 'run', *{list(args)!r}]\nfrom mlkit.cli import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\nelse:\n    code = 0\n"
        "print(json.dumps({'code': code, 'typer': 'typer' in sys.modules}))"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True
    )


def test_a_plain_run_never_imports_typer_and_a_typo_still_gets_its_hint(tmp_path):
    project = tmp_path / "p"
    project.mkdir()
    (project / "MLproject").write_text('entry_points:\n  main:\n    command: "python -c pass"\n')
    store = str(tmp_path / "mlruns")
    plain = _mlkit(tmp_path, str(project), "--env-manager", "local", "--gpus", "none", "--store", store)
    assert json.loads(plain.stdout.splitlines()[-1]) == {"code": 0, "typer": False}
    assert "FINISHED" in plain.stderr
    typo = _mlkit(tmp_path, str(project), "--gpu", "1", "--store", store)
    assert json.loads(typo.stdout.splitlines()[-1]) == {"code": 2, "typer": True}
    assert "did you mean --gpus?" in typo.stderr
    # an error inside the command (no such entry point): one line and its exit code, without typer
    bad = _mlkit(tmp_path, str(project), "-e", "nope", "--env-manager", "local", "--store", store)
    assert json.loads(bad.stdout.splitlines()[-1])["typer"] is False
    assert json.loads(bad.stdout.splitlines()[-1])["code"] != 0
    assert bad.stderr.startswith("Error: ") and "Traceback" not in bad.stderr
