"""Differential test: mlkit builds the same command as MLflow's own `_project_spec` for the same
MLproject and parameters, wherever MLflow is right (the differences are listed in docs/mlproject.md).

argv results are compared with `shlex.split` of MLflow's string; shell results must be identical.
"""

from __future__ import annotations

import shlex
import textwrap

import pytest

from mlkit.project import load_project

pytestmark = pytest.mark.mlflow

PROJECTS = {
    "typed": (
        """
        name: typed
        entry_points:
          main:
            parameters:
              alpha: float
              epochs: {type: int, default: 3}
              name: {type: string, default: "my run"}
              flag: {default: true}
              tiny: {type: float, default: 1e-3}
              empty: {default: ""}
              tag: {type: string}
            command: "python train.py --alpha {alpha} --epochs={epochs} --name {name} --flag {flag} --tiny {tiny} --empty {empty} --tag {tag}"
        """,
        "main",
        [
            {"alpha": "0.5", "tag": "t"},
            {"alpha": "1e-4", "tag": "a b'c", "name": 'x "y" z', "epochs": "10"},
            {"tag": "", "alpha": "-1", "extra": "x y", "weird key": "v", "b": "$(touch pwned)"},
        ],
    ),
    "paths": (
        """
        entry_points:
          main:
            parameters:
              data: {type: path, default: data.txt}
              out: {type: uri, default: "s3://bucket/out"}
            command: "python prep.py --data {data} --out {out}"
        """,
        "main",
        [{}, {"data": "sub/more.txt"}, {"out": "file:///tmp/x"}],
    ),
    "shell": (
        """
        entry_points:
          main:
            parameters:
              n: {type: int, default: 1}
              msg: string
            command: "python train.py --n {n} --msg {msg} 2>&1 | tee log.txt && echo done; echo $HOME"
        """,
        "main",
        [{"msg": "hi"}, {"msg": "a; rm -rf ~ $(x) `y` 'q' \"d\"\n", "n": "5", "extra": "e e"}],
    ),
    "braces": (
        """
        entry_points:
          main:
            parameters: {x: string}
            command: "python a.py '{{literal}}' --x={x}"
        """,
        "main",
        [{"x": "1"}, {"x": "{a,b}"}],
    ),
    "scripts": ("", "train.py", [{}, {"lr": "0.1", "name": "two words"}]),
    "shell_script": ("", "run.sh", [{"a": "1", "b": "two words"}]),
    "no_parameters": ("entry_points:\n  main:\n    command: python train.py\n", "main", [{}, {"x": "1"}]),
}


@pytest.mark.parametrize("case", list(PROJECTS))
def test_same_command_as_mlflow(make_project, tmp_path, monkeypatch, case: str) -> None:
    from mlflow.projects import _project_spec

    text, entry, param_sets = PROJECTS[case]
    directory = make_project(
        textwrap.dedent(text) if text else None,
        {"data.txt": "1\n", "sub/more.txt": "2\n", "train.py": "", "run.sh": ""},
    )
    monkeypatch.chdir(directory)  # MLflow resolves path defaults against the cwd, mlkit the project
    monkeypatch.setenv("SHELL", "/bin/bash")
    theirs = _project_spec.load_project(str(directory))
    ours = load_project(directory)
    for params in param_sets:
        storage = tmp_path / f"storage-{len(list(tmp_path.iterdir()))}"
        storage.mkdir()
        expected = theirs.get_entry_point(entry).compute_command(dict(params), str(storage))
        result = ours.entry_point(entry).resolve(params, storage_dir=storage)
        if result.argv is not None:
            assert result.argv == shlex.split(expected), params
        else:
            assert result.shell == expected, params


def test_mlflow_quotes_the_logged_values_mlkit_does_not(make_project) -> None:
    """MLflow logs shell-quoted values (mlflow-compat §1.5); mlkit logs what the user typed."""
    from mlflow.projects import _project_spec

    directory = make_project(
        "entry_points:\n  main:\n    parameters: {name: string}\n    command: python a.py {name}\n"
    )
    theirs, _ = (
        _project_spec.load_project(str(directory))
        .get_entry_point("main")
        .compute_parameters({"name": "a b'c"}, None)
    )
    assert theirs == {"name": "'a b'\"'\"'c'"}
    assert load_project(directory).entry_point("main").resolve({"name": "a b'c"}).params == {"name": "a b'c"}


def test_mlflow_breaks_quoted_placeholders_mlkit_does_not(make_project) -> None:
    """MLflow puts its quotes inside the template's quotes, so the program sees them (and "$(...)"
    inside double quotes runs); mlkit passes the value itself."""
    from mlflow.projects import _project_spec

    directory = make_project(
        'entry_points:\n  main:\n    parameters: {m: string}\n    command: "python a.py \\"{m}\\""\n'
    )
    expected = (
        _project_spec.load_project(str(directory)).get_entry_point("main").compute_command({"m": "a b"}, None)
    )
    assert shlex.split(expected) == ["python", "a.py", "'a b'"]
    assert load_project(directory).entry_point("main").resolve({"m": "a b"}).argv == ["python", "a.py", "a b"]
