"""A corpus of MLproject shapes seen in real projects (written here, not copied), one per row of
issue 13's table: where MLflow is right, MLflow's own parser is the oracle (mlkit runs the entry
point with the same command, with at most a one-line warning); where MLflow silently misreads the
file, mlkit refuses it with an error that says what to write. Plus the error-message rules (each
problem once; one header line, then one short line per problem, bounded) and per-entry-point
validation.
"""

from __future__ import annotations

import shlex
import textwrap
from pathlib import Path

import pytest

from mlkit.errors import ProjectError
from mlkit.project import check_undeclared, load_project, survey_project
from mlkit.project.model import MAX_LINE, MAX_LISTED

pytestmark = pytest.mark.mlflow

FILES = {"conda.yaml": "name: x\ndependencies: [python=3.11]\n", "train.py": "", "data.txt": "1\n"}

# name -> (MLproject text, entry point, -P values, substrings of the expected warnings, in order)
MLFLOW_RIGHT = {
    "type_str": (
        """
        entry_points:
          main:
            parameters:
              model: {type: str, default: resnet}
              tag: str
            command: "python train.py --model {model} --tag {tag}"
        """,
        "main",
        {"tag": "t1"},
        [],
    ),
    "foreign_types": (
        """
        entry_points:
          main:
            parameters:
              flag: {type: bool, default: true}
              enabled: {type: boolean, default: false}
              names: {type: "list[str]", default: "a,b"}
              sizes: "list[int]"
              n: {type: integer, default: 3}
            command: "python train.py --flag {flag} --enabled {enabled} --names {names} --sizes {sizes} --n {n}"
        """,
        "main",
        {"sizes": "1,2"},
        [
            "flag: type 'bool'",
            "enabled: type 'boolean'",
            "names: type 'list[str]'",
            "sizes: type 'list[int]'",
            "n: type 'integer'",
        ],
    ),  # fmt: skip
    "description_keys": (
        """
        entry_points:
          main:
            description: Train the model.
            parameters:
              lr: {type: float, default: 0.1, description: learning rate}
            command: "python train.py --lr {lr}"
        """,
        "main",
        {},
        [],
    ),
    "other_tools_keys": (
        """
        name: mixed
        hooks: {pre: echo}
        signature: {inputs: x}
        target: cpu
        meta_data: {owner: me}
        user_options: [a]
        adapters: {}
        renv_env: renv.lock
        kubernetes_env: {image: x}
        entry_points:
          main:
            command: "python train.py"
        """,
        "main",
        {},
        [
            "hooks: another tool's key",
            "signature:",
            "target:",
            "meta_data:",
            "user_options:",
            "adapters:",
            "renv_env:",
            "kubernetes_env:",
        ],
    ),  # fmt: skip
    "docker_other_keys": (
        """
        docker_env:
          image: my-image
          build_context: .
          namespace: team
          registry: registry.example
        entry_points:
          main:
            command: "python train.py"
        """,
        "main",
        {},
        ["docker_env.build_context", "docker_env.namespace", "docker_env.registry"],
    ),
    "other_entry_point_broken": (
        """
        entry_points:
          main:
            parameters: {lr: {type: float, default: 0.1}}
            command: "python train.py --lr {lr}"
          eval:
            parameters: {n: {type: int, default: many}}
            command: "python eval.py --n {n}"
        """,
        "main",
        {"lr": "0.5"},
        ["entry point 'eval' cannot run and is skipped: entry_points.eval.parameters.n.default: 'many'"],
    ),
    "conda_env_null": (
        """
        conda_env: ~
        entry_points:
          main:
            command: "python train.py"
        """,
        "main",
        {},
        [],
    ),
    "unknown_key_not_a_typo": (
        """
        entry_points:
          main:
            docs: see README
            parameters: {lr: {type: float, default: 0.1, help: learning rate}}
            command: "python train.py --lr {lr}"
        """,
        "main",
        {},
        ["entry_points.main.docs: unknown key, ignored", "parameters.lr.help: unknown key, ignored"],
    ),
}


def _write(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "MLproject").write_text(textwrap.dedent(text))
    for name, content in FILES.items():
        (directory / name).write_text(content)
    return directory


@pytest.mark.parametrize("case", list(MLFLOW_RIGHT))
def test_what_mlflow_runs_mlkit_runs_with_the_same_command(tmp_path, monkeypatch, case: str) -> None:
    from mlflow.projects import _project_spec

    text, entry, params, warned = MLFLOW_RIGHT[case]
    directory = _write(tmp_path / case, text)
    monkeypatch.chdir(directory)
    monkeypatch.setenv("SHELL", "/bin/bash")
    expected = _project_spec.load_project(str(directory)).get_entry_point(entry).compute_command(params, None)
    project = load_project(directory, entry)
    result = project.entry_point(entry).resolve(params)
    assert result.argv == shlex.split(expected)
    warnings = project.warnings_for(entry)
    assert len(warnings) == len(warned), warnings  # one line per sloppy thing, no more
    for line, part in zip(warnings, warned, strict=True):
        assert part in line and "\n" not in line and len(line) <= MAX_LINE


def test_type_str_is_a_string_and_foreign_types_are_unchecked_text(tmp_path) -> None:
    project = load_project(_write(tmp_path / "p", MLFLOW_RIGHT["foreign_types"][0]), "main")
    params = project.entry_point("main").parameters
    assert {p.type for p in params.values()} == {"string"}
    assert params["flag"].default == "True"  # str() of YAML true, as MLflow
    project = load_project(_write(tmp_path / "q", MLFLOW_RIGHT["type_str"][0]), "main")
    assert project.entry_point("main").parameters["model"].type == "string"


def test_conda_env_null_finds_the_default_environment_file_as_mlflow(tmp_path) -> None:
    from mlflow.projects import _project_spec

    directory = _write(tmp_path / "p", MLFLOW_RIGHT["conda_env_null"][0])
    theirs = _project_spec.load_project(str(directory))
    ours = load_project(directory)
    assert ours.env is not None and ours.env.kind == "conda"
    assert Path(theirs.env_config_path) == ours.env.path


def test_empty_parameters_run_where_mlflow_crashes(tmp_path) -> None:
    from mlflow.projects import _project_spec

    directory = _write(
        tmp_path / "p", "entry_points:\n  main:\n    parameters:\n    command: python train.py\n"
    )
    with pytest.raises(AttributeError):  # MLflow: 'NoneType' object has no attribute 'items'
        _project_spec.load_project(str(directory))
    assert load_project(directory, "main").entry_point("main").resolve({}).argv == ["python", "train.py"]


# Where MLflow silently does something the author did not mean: mlkit refuses, saying what to write.
# name -> (MLproject text, what MLflow silently makes of it, substrings of mlkit's error)
MLKIT_RIGHT = {
    "flow_map_no_space": (
        "entry_points:\n  main:\n    parameters:\n      n: {type:int, default:10}\n    command: python train.py --n {n}\n",
        ("n", "string", None),
        ["parameters.n.type:int: missing space after ':'", "write {type: int}"],
    ),
    "flow_map_equals": (
        'entry_points:\n  main:\n    parameters:\n      s: {default="x"}\n    command: python train.py --s {s}\n',
        ("s", "string", None),
        ["'=' where YAML needs ': '", "write {default: \"x\"}"],
    ),
    "default_typo": (
        "entry_points:\n  main:\n    parameters:\n      lr: {type: float, defulat: 0.1}\n    command: python train.py --lr {lr}\n",
        ("lr", "float", None),
        ["parameters.lr.defulat: unknown key (did you mean 'default'?)"],
    ),
    "shorthand_default": (
        "entry_points:\n  main:\n    parameters: {who: world}\n    command: python train.py {who}\n",
        ("who", "world", None),
        ["unknown type 'world' (to give a default write {default: ...})"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(MLKIT_RIGHT))
def test_what_mlflow_silently_misreads_mlkit_refuses(tmp_path, monkeypatch, case: str) -> None:
    from mlflow.projects import _project_spec

    text, (name, mlflow_type, mlflow_default), expected = MLKIT_RIGHT[case]
    directory = _write(tmp_path / case, text)
    monkeypatch.chdir(directory)
    param = _project_spec.load_project(str(directory)).get_entry_point("main").parameters[name]
    assert (param.type, param.default) == (mlflow_type, mlflow_default)  # the default is gone
    with pytest.raises(ProjectError) as info:
        load_project(directory, "main")
    text = " ".join([info.value.message, *getattr(info.value, "details", ()), str(info.value.hint)])
    for part in expected:
        assert part in text, text
    assert "declares no parameter" not in text  # reported once, not again at its use


def test_bare_flow_map_parameter_is_refused_where_mlflow_crashes(tmp_path, monkeypatch) -> None:
    from mlflow.projects import _project_spec

    directory = _write(
        tmp_path / "p", "entry_points:\n  main:\n    parameters: {lr:0.1}\n    command: python train.py\n"
    )
    monkeypatch.chdir(directory)
    with pytest.raises(AttributeError):  # MLflow: 'NoneType' object has no attribute 'get'
        _project_spec.load_project(str(directory))
    with pytest.raises(ProjectError) as info:
        load_project(directory, "main")
    assert "parameters.lr:0.1: missing space after ':'" in info.value.message
    assert info.value.hint == "write lr: 0.1"


def test_entry_points_typo_is_an_error_mlflow_finds_no_entry_point(tmp_path, monkeypatch) -> None:
    from mlflow.projects import _project_spec

    directory = _write(tmp_path / "p", "entry_pionts:\n  main:\n    command: python train.py\n")
    monkeypatch.chdir(directory)
    assert _project_spec.load_project(str(directory))._entry_points == {}
    with pytest.raises(ProjectError) as info:
        load_project(directory, "main")
    assert info.value.message == "MLproject: entry_pionts: unknown key (did you mean 'entry_points'?)"


@pytest.mark.parametrize("ptype", ["int", "float"])
def test_default_none_says_what_to_write(tmp_path, monkeypatch, ptype: str) -> None:
    directory = _write(
        tmp_path / "p",
        f"entry_points:\n  main:\n    parameters:\n      n: {{type: {ptype}, default: None}}\n    command: python train.py --n {{n}}\n",
    )
    monkeypatch.chdir(directory)
    with pytest.raises(ProjectError) as info:
        load_project(directory, "main")
    assert info.value.message.startswith("MLproject: entry_points.main.parameters.n.default: 'None' is not a")
    assert "YAML reads None as text" in info.value.message
    assert "remove `default:`" in str(info.value.hint)


def test_each_problem_is_reported_once(tmp_path, monkeypatch) -> None:
    directory = _write(
        tmp_path / "p",
        """
        entry_points:
          main:
            parameters:
              a: {type: flot, default: 1}
              b: {type: int, default: x}
              c: {type:int, default:1}
            command: "python train.py --a {a} --b {b} --c {c}"
        """,
    )
    monkeypatch.chdir(directory)
    with pytest.raises(ProjectError) as info:
        load_project(directory, "main")
    lines = info.value.details  # type: ignore[attr-defined]
    assert len(lines) == 4, lines  # a (type), b (default), c (two keys without a space)
    assert not any("declares no parameter" in line for line in lines)


def test_error_is_one_header_then_short_lines_bounded(tmp_path, monkeypatch) -> None:
    names = [f"p{i}_" + "x" * 200 for i in range(40)]
    params = "\n".join(f"      {n}: {{type: flot, default: {'y' * 500}}}" for n in names)
    command = " ".join("{" + n + "}" for n in names)
    directory = _write(
        tmp_path / "p",
        f"entry_points:\n  main:\n    parameters:\n{params}\n    command: python train.py {command}\n",
    )
    monkeypatch.chdir(directory)
    with pytest.raises(ProjectError) as info:
        load_project(directory, "main")
    error = info.value
    assert error.message == "MLproject: 40 problems:" and "\n" not in error.message
    lines = error.details  # type: ignore[attr-defined]
    assert len(lines) == MAX_LISTED + 1 and lines[-1] == "... and 30 more"
    assert all(len(line) <= MAX_LINE and "\n" not in line for line in lines)
    assert all("did you mean 'float'" in line and "fix: use one of" in line for line in lines[:-1])
    assert len(error.message) + sum(map(len, lines)) + len(error.hint or "") < 3000


def test_a_single_problem_is_one_line_with_its_hint(tmp_path, monkeypatch) -> None:
    directory = _write(
        tmp_path / "p", "entry_points:\n  main:\n    parameters: {a: flot}\n    command: python x.py {a}\n"
    )
    monkeypatch.chdir(directory)
    with pytest.raises(ProjectError) as info:
        load_project(directory, "main")
    assert (
        info.value.message
        == "MLproject: entry_points.main.parameters.a: unknown type 'flot' (did you mean 'float'?)"
    )
    assert info.value.hint == "use one of string, float, int, path, uri"
    assert not getattr(info.value, "details", None)


PER_ENTRY = """
entry_points:
  main:
    command: "python train.py"
  eval:
    parameters: {n: {type: flot, default: 1}}
    command: "python eval.py --n {n}"
  sloppy:
    parameters: {flag: bool}
    command: "python train.py --flag {flag}"
"""


def test_validation_is_per_entry_point(tmp_path, monkeypatch) -> None:
    directory = _write(tmp_path / "p", PER_ENTRY)
    monkeypatch.chdir(directory)
    project = load_project(directory, "main")  # eval is broken, main runs
    assert project.entry_point("main").resolve({}).argv == ["python", "train.py"]
    with pytest.raises(ProjectError) as info:
        project.entry_point("eval")
    assert "entry_points.eval.parameters.n: unknown type 'flot' (did you mean 'float'?)" in info.value.message
    with pytest.raises(ProjectError):
        load_project(directory, "eval")
    with pytest.raises(ProjectError):
        load_project(directory)  # no entry point named: every one must be valid
    assert survey_project(directory).statuses() == [
        ("main", "ok", ""),
        ("sloppy", "warnings", "MLproject: entry_points.main.sloppy".replace("main.", "") + ".parameters.flag: "
         "type 'bool' is not an MLflow type: the value is passed as text, unchecked"),
        ("eval", "error", "entry_points.eval.parameters.n: unknown type 'flot' (did you mean 'float'?)"),
    ]  # fmt: skip


def test_top_level_problems_fail_every_entry_point(tmp_path, monkeypatch) -> None:
    directory = _write(tmp_path / "p", "nmae: x\n" + PER_ENTRY)
    monkeypatch.chdir(directory)
    with pytest.raises(ProjectError) as info:
        load_project(directory, "main")
    assert info.value.message == "MLproject: nmae: unknown key (did you mean 'name'?)"


def test_undeclared_params_warn_when_close_and_refuse_when_strict(tmp_path) -> None:
    directory = _write(
        tmp_path / "p",
        "entry_points:\n  main:\n    parameters: {width: {type: int, default: 8}}\n    command: python train.py --width {width}\n",
    )
    entry = load_project(directory, "main").entry_point("main")
    assert check_undeclared(entry, {"width": "4", "extra": "1"}) == []  # far from any name: MLflow's rule
    assert check_undeclared(entry, {"widt": "4"}) == [
        "-P 'widt' is not declared (did you mean width?): it is passed as --widt 4"
    ]
    with pytest.raises(ProjectError) as info:
        check_undeclared(entry, {"extra": "1"}, strict=True)
    assert "-P 'extra': not a parameter of this entry point" in info.value.message
    script = load_project(directory).entry_point("train.py")
    assert check_undeclared(script, {"anything": "1"}, strict=True) == []  # scripts declare nothing


def test_path_default_hint_names_the_project_directory(tmp_path, monkeypatch) -> None:
    directory = _write(
        tmp_path / "p",
        "entry_points:\n  main:\n    parameters: {d: {type: path, default: missing.csv}}\n    command: python train.py {d}\n",
    )
    monkeypatch.chdir(tmp_path)
    entry = load_project(directory, "main").entry_point("main")
    with pytest.raises(ProjectError) as info:
        entry.resolve({})
    assert f"looked for {directory / 'missing.csv'}" in info.value.message
    assert "taken from the project directory" in str(info.value.hint)
    with pytest.raises(ProjectError) as info:
        entry.resolve({"d": "nope.csv"})
    assert "directory you run mlkit in" in str(info.value.hint)
