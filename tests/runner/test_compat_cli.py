"""`mlkit run` on MLflow projects as people write them (issue 13): warnings, per-entry-point
status, docker_env without a container engine (exit 73, nothing created), undeclared -P names, unknown flags."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from helpers import REPO

SLOPPY = {
    "MLproject": """
        name: sloppy
        hooks: {pre: echo}
        entry_points:
          main:
            description: the main one
            parameters:
              width: {type: int, default: 8}
              flag: {type: bool, default: true}
            command: "python3 train.py --width {width} --flag {flag}"
          eval:
            parameters: {n: {type: flot, default: 1}}
            command: "python eval.py --n {n}"
    """,
    "train.py": "import sys\nprint('args', sys.argv[1:])\n",
}


def test_sloppy_file_runs_with_one_line_per_warning(make_project, mlkit_run, only_run):
    project = make_project(SLOPPY)
    result = mlkit_run(str(project), "-P", "width=4")
    assert result.returncode == 0, result.stderr
    assert "args ['--width', '4', '--flag', 'True']" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.startswith("mlkit: warning: ")]
    assert len(warnings) == 3, result.stderr  # hooks, flag's type, the broken eval entry point
    assert any("hooks: another tool's key" in w for w in warnings)
    assert any("type 'bool' is not an MLflow type" in w for w in warnings)
    assert any("entry point 'eval' cannot run" in w for w in warnings)
    assert only_run().info.status == "FINISHED"


def test_dry_run_without_e_lists_every_entry_point(make_project, mlkit_run, store_root):
    project = make_project(SLOPPY)
    result = mlkit_run(str(project), "--dry-run")
    assert result.returncode == 0, result.stderr
    listing = result.stdout.split("\n\n")[0].splitlines()
    assert listing[0] == "entry points:"
    assert listing[1].split()[:2] == ["main", "warnings"]
    assert listing[2].split()[:2] == ["eval", "error"] and "unknown type 'flot'" in listing[2]
    assert "python3 train.py --width 8 --flag True" in result.stdout  # the file's own interpreter word
    assert "interpreter:  /" in result.stdout  # and the one that will run it
    doc = json.loads(mlkit_run(str(project), "--dry-run", "--json").stdout)
    assert [(e["name"], e["status"]) for e in doc["entry_points"]] == [
        ("main", "warnings"),
        ("eval", "error"),
    ]
    assert doc["argv"][0] == "python3" and doc["interpreter"].startswith("/")
    broken = mlkit_run(str(project), "--dry-run", "-e", "eval")
    assert broken.returncode == 2 and "unknown type 'flot'" in broken.stderr
    assert not store_root.exists()


def test_many_problems_print_a_header_and_one_line_each(make_project, mlkit_run):
    params = "\n".join(f"              p{i}: {{type: flot}}" for i in range(14))
    project = make_project(
        {"MLproject": f"entry_points:\n  main:\n    parameters:\n{params}\n    command: python x.py\n"}
    )
    result = mlkit_run(str(project), "--dry-run")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0].endswith("MLproject: 14 problems:") and lines[0].startswith("Error: ")
    assert lines[11] == "  ... and 4 more" and lines[12].startswith("  hint: ")
    assert "Traceback" not in result.stderr


DOCKER = {
    "MLproject": """
        docker_env: {image: "my-image:1", build_context: .}
        entry_points:
          main:
            command: "python train.py"
    """,
    "train.py": "print('ran')\n",
}


def test_docker_env_without_an_engine_exits_73_and_creates_nothing(
    make_project, mlkit_run, store_root, tmp_path
):
    """docker_env runs in a container (tests/containers); with no engine on PATH the run is refused
    before anything exists, while --dry-run still shows the engine argv and local runs in place."""
    project = make_project(DOCKER)
    before = sorted(p.name for p in tmp_path.iterdir())
    no_engine = {"PATH": str(tmp_path / "empty-bin")}
    dry = mlkit_run(str(project), "--dry-run", "-e", "main", "--json", fast=False, env=no_engine)
    real = mlkit_run(str(project), fast=False, env=no_engine)
    assert dry.returncode == 0 and json.loads(dry.stdout)["argv"][1:3] == ["run", "--rm"]
    assert real.returncode == 73
    error = [line for line in real.stderr.splitlines() if line.startswith("Error: ")]
    assert error == [
        "Error: docker_env needs a container engine: docker is not installed; podman is not installed"
    ]
    assert not store_root.exists() and sorted(p.name for p in tmp_path.iterdir()) == before
    assert "ran" in mlkit_run(str(project)).stdout  # --env-manager local runs it in place


PARAMS = {
    "MLproject": """
        entry_points:
          main:
            parameters: {width: {type: int, default: 8}}
            command: "python train.py --width {width}"
    """,
    "train.py": "import sys\nprint('args', sys.argv[1:])\n",
}


def test_undeclared_close_name_warns_and_strict_refuses(make_project, mlkit_run, store_root):
    project = make_project(PARAMS)
    result = mlkit_run(str(project), "-P", "widt=4")
    assert result.returncode == 0, result.stderr
    assert "mlkit: warning: -P 'widt' is not declared (did you mean width?)" in result.stderr
    strict = mlkit_run(str(project), "-P", "extra=4", "--strict-params", "--store", str(store_root / "x"))
    assert strict.returncode == 2 and "not a parameter of this entry point" in strict.stderr
    assert not (store_root / "x").exists()


def test_unknown_flag_naming_a_parameter_says_how_to_pass_it(make_project, mlkit_run):
    project = make_project(PARAMS)
    result = mlkit_run(str(project), "--width", "3")
    assert result.returncode == 2
    assert "no such option: --width" in result.stderr
    assert "parameters are passed with `-P width=3`" in result.stderr
    other = mlkit_run(str(project), "--bogus")
    assert other.returncode == 2 and "no such option: --bogus" in other.stderr and "-P" not in other.stderr


def test_trainers_refuse_abbreviated_flags():
    for train in sorted((REPO / "projects").glob("*/train.py")):
        calls = [
            node
            for node in ast.walk(ast.parse(train.read_text()))
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "ArgumentParser"
        ]
        assert calls, train
        for call in calls:
            assert any(k.arg == "allow_abbrev" and k.value.value is False for k in call.keywords), train
    runtime = (REPO / "mlkit/train/runtime.py").read_text()
    assert "p.allow_abbrev = False" in runtime  # the shared helper turns it off for any trainer


def test_relogging_the_same_param_value_is_not_an_error(tmp_path: Path):
    import pytest

    from mlkit.errors import MlkitError
    from mlkit.tracking.store import FileStore

    store = FileStore(tmp_path / "mlruns")
    run_id = store.create_run("0").info.run_id
    store.log_params(run_id, {"width": "8"})
    store.log_param(run_id, "width", 8)  # the trainer logs what the supervisor logged
    with pytest.raises(MlkitError):
        store.log_param(run_id, "width", 4)  # a different value still is
