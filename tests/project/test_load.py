"""load_project: finding the file, top-level keys, environments, parameters, and every load error."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from mlkit.errors import ExitCode, NotFoundError, ProjectError
from mlkit.project import EntryPoint, Parameter, load_project

MAIN = """
entry_points:
  main:
    command: python train.py
"""


def load_error(directory: Path) -> ProjectError:
    with pytest.raises(ProjectError) as info:
        load_project(directory)
    assert info.value.exit_code == ExitCode.USAGE
    assert "\n" not in info.value.message
    assert info.value.hint
    return info.value


@pytest.mark.parametrize("filename", ["MLproject", "mlproject", "MLProject", "MLPROJECT"])
def test_file_name_is_case_insensitive(tmp_path: Path, filename: str) -> None:
    (tmp_path / filename).write_text("name: demo\n" + MAIN)
    project = load_project(tmp_path)
    assert project.file == tmp_path / filename
    assert project.name == "demo"
    assert list(project.entry_points) == ["main"]


def test_file_with_extension_is_not_an_mlproject(tmp_path: Path) -> None:
    (tmp_path / "MLproject.yaml").write_text(MAIN)
    project = load_project(tmp_path)
    assert project.file is None
    assert project.entry_points == {}


def test_project_is_frozen_and_paths_absolute(make_project, monkeypatch) -> None:
    directory = make_project(MAIN, {"conda.yaml": "name: x\n"})
    monkeypatch.chdir(directory.parent)
    project = load_project(Path("proj"))
    assert project.directory == directory and project.directory.is_absolute()
    assert project.name == "proj"  # no name: the directory's name
    assert project.env is not None and project.env.path == directory / "conda.yaml"
    with pytest.raises(dataclasses.FrozenInstanceError):
        project.name = "other"  # type: ignore[misc]
    entry = project.entry_point("main")
    assert isinstance(entry, EntryPoint) and entry.command == "python train.py"


def test_empty_file_is_an_empty_project(make_project) -> None:
    project = load_project(make_project(""))
    assert project.entry_points == {} and project.env is None


@pytest.mark.parametrize(
    ("key", "files", "kind", "filename"),
    [
        ("conda_env: env/conda.yaml", {"env/conda.yaml": "name: x\n"}, "conda", "env/conda.yaml"),
        ("python_env: python_env.yaml", {"python_env.yaml": "python: '3.11'\n"}, "python", "python_env.yaml"),
        ("", {"python_env.yaml": "python: '3.11'\n", "conda.yaml": "name: x\n"}, "python", "python_env.yaml"),
        ("", {"conda.yaml": "name: x\n"}, "conda", "conda.yaml"),
    ],
)
def test_environment_files(make_project, key: str, files: dict, kind: str, filename: str) -> None:
    directory = make_project(key + "\n" + MAIN, files)
    env = load_project(directory).env
    assert env is not None
    assert env.kind == kind and env.path == (directory / filename).resolve() and env.path.is_absolute()


def test_no_environment_file_gives_none(make_project) -> None:
    assert load_project(make_project(MAIN)).env is None


def test_docker_env(make_project) -> None:
    docker = 'name: dock\ndocker_env:\n  image: pytorch/pytorch:2.3\n  volumes: ["/data:/data"]\n  environment: [["A", "1"], "HOME"]\n'
    directory = make_project(docker + MAIN)
    env = load_project(directory).env
    assert env is not None and env.kind == "docker" and env.path is None
    assert env.image == "pytorch/pytorch:2.3"
    assert env.docker == {
        "image": "pytorch/pytorch:2.3",
        "volumes": ["/data:/data"],
        "environment": [["A", "1"], "HOME"],
    }


def test_directory_without_mlproject(make_project) -> None:
    directory = make_project(None, {"train.py": "print(1)\n", "conda.yaml": "name: x\n"})
    project = load_project(directory)
    assert project.file is None and project.entry_points == {}
    assert project.env is not None and project.env.kind == "conda"


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError) as missing:  # exit 66, as docs/exit-codes.md says
        load_project(tmp_path / "missing")
    assert "no such directory" in missing.value.message and missing.value.hint
    (tmp_path / "train.py").write_text("")
    error = load_error(tmp_path / "train.py")
    assert "not a directory" in error.message and "-e train.py" in error.hint


def test_the_mlproject_file_itself_names_its_directory(make_project) -> None:
    directory = make_project(MAIN)
    assert load_project(directory / "MLproject").directory == directory


def test_parameter_forms(make_project) -> None:
    directory = make_project(
        """
        entry_points:
          main:
            parameters:
              a: float
              b: {type: float, default: 0.5}
              c: {default: hello}
              d: {type: int}
              e: 10
              f: 0.25
              g:
              h: {type: path, default: data.txt}
              i: {type: uri, default: "s3://b/k"}
              j: {default: ""}
              k: {default: true}
              l: {default: 1e-3, type: float}
            command: python train.py
        """
    )
    params = load_project(directory).entry_point("main").parameters
    assert list(params) == list("abcdefghijkl")
    assert params["a"] == Parameter("a", "float", None) and params["a"].required
    assert params["b"] == Parameter("b", "float", "0.5")
    assert params["c"] == Parameter("c", "string", "hello")
    assert params["d"] == Parameter("d", "int", None)
    assert params["e"] == Parameter("e", "int", "10")
    assert params["f"] == Parameter("f", "float", "0.25")
    assert params["g"] == Parameter("g", "string", None)
    assert params["h"] == Parameter("h", "path", "data.txt")
    assert params["i"] == Parameter("i", "uri", "s3://b/k")
    assert params["j"] == Parameter("j", "string", "") and not params["j"].required
    assert params["k"] == Parameter("k", "string", "True")  # str() of YAML true, as MLflow
    assert params["l"] == Parameter("l", "float", "1e-3")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nme: x\n" + MAIN, "MLproject: nme: unknown key (did you mean 'name'?)"),
        ("entrypoints: {}\n", "MLproject: entrypoints: unknown key (did you mean 'entry_points'?)"),
        (
            "entry_points:\n  main:\n    comand: python x.py\n    command: python x.py\n",
            "MLproject: entry_points.main.comand: unknown key (did you mean 'command'?)",
        ),
        (
            "entry_points:\n  main:\n    parameters:\n      lr: flot\n    command: python x.py {lr}\n",
            "MLproject: entry_points.main.parameters.lr: unknown type 'flot' (did you mean 'float'?)",
        ),
        (
            "entry_points:\n  main:\n    parameters:\n      lr: {type: float, defualt: 1}\n    command: python x.py\n",
            "MLproject: entry_points.main.parameters.lr.defualt: unknown key (did you mean 'default'?)",
        ),
        (
            "entry_points:\n  main:\n    parameters:\n      lr: {type: float, default: abc}\n    command: python x.py\n",
            "MLproject: entry_points.main.parameters.lr.default: 'abc' is not a float",
        ),
        (
            "entry_points:\n  main:\n    parameters:\n      n: {type: int, default: 1.5}\n    command: python x.py\n",
            "MLproject: entry_points.main.parameters.n.default: '1.5' is not an int",
        ),
        (
            "entry_points:\n  main:\n    parameters:\n      u: {type: uri, default: data.txt}\n    command: python x.py\n",
            "MLproject: entry_points.main.parameters.u.default: 'data.txt' is not a URI",
        ),
        (
            "entry_points:\n  main:\n    parameters:\n      n: {default: [1, 2]}\n    command: python x.py\n",
            "MLproject: entry_points.main.parameters.n.default: must be a single value, not a list",
        ),
        (
            "entry_points:\n  main:\n    parameters:\n      n: [1, 2]\n    command: python x.py\n",
            "MLproject: entry_points.main.parameters.n: must be a type name or a mapping, not a list",
        ),
        (
            "entry_points:\n  main:\n    parameters: {}\n",
            "MLproject: entry_points.main.command: missing or not a string",
        ),
        (
            "entry_points:\n  main: python x.py\n",
            "MLproject: entry_points.main: must be a mapping with a command",
        ),
        ("entry_points: [main]\n", "MLproject: entry_points: must be a mapping of entry point names"),
        (
            "entry_points:\n  main:\n    parameters: [a]\n    command: x\n",
            "MLproject: entry_points.main.parameters: must be a mapping of parameter names",
        ),
        (
            "entry_points:\n  main:\n    command: python x.py {lr}\n",
            "MLproject: entry_points.main.command: uses {lr} but declares no parameter 'lr'",
        ),
        (
            "entry_points:\n  main:\n    command: python x.py {}\n",
            "MLproject: entry_points.main.command: positional placeholders",
        ),
        (
            "entry_points:\n  main:\n    parameters: {a: float}\n    command: python x.py {a:.2f}\n",
            "MLproject: entry_points.main.command: placeholder {a} has a format spec",
        ),
        (
            "entry_points:\n  main:\n    command: python x.py {\n",
            "MLproject: entry_points.main.command: Single '{'",
        ),
        (
            "entry_points:\n  main:\n    command: python x.py 'oops\n",
            "MLproject: entry_points.main.command: unclosed quote",
        ),
        (
            "entry_points:\n  main:\n    parameters: {a: string}\n    command: echo `echo {a}`\n",
            "MLproject: entry_points.main.command: {a}: a parameter inside `...` cannot be quoted safely",
        ),
        (
            "entry_points:\n  main:\n    parameters: {a: string}\n    command: echo ${{X:-{a}}}\n",
            "MLproject: entry_points.main.command: {a}: a parameter inside ${...} cannot be quoted safely",
        ),
        (
            'entry_points:\n  main:\n    parameters: {a: string}\n    command: "cat <<EOF\\n{a}\\nEOF"\n',
            "MLproject: entry_points.main.command: {a}: a parameter after a << here-document",
        ),
        (
            "entry_points:\n  main:\n    parameters: {a: string}\n    command: echo ${a}\n",
            "MLproject: entry_points.main.command: {a}: a parameter right after '$'",
        ),
        (
            "entry_points:\n  main:\n    parameters: {a=b: string}\n    command: x\n",
            "MLproject: entry_points.main.parameters.a=b: this parameter name cannot be logged",
        ),
        (
            "entry_points:\n  main:\n    parameters: {a: string}\n    command: echo \\{a} | cat\n",
            "MLproject: entry_points.main.command: {a}: a parameter right after a backslash",
        ),
        (
            'entry_points:\n  main:\n    parameters: {a: string}\n    command: echo "\\{a}"\n',
            "MLproject: entry_points.main.command: {a}: a parameter right after a backslash",
        ),
        ("name: [a]\n", "MLproject: name: must be a string, not a list"),
        (
            "databricks_spark_job: {python_file: x.py}\n",
            "MLproject: databricks_spark_job: Databricks jobs are not supported",
        ),
        ("- a\n- b\n", "MLproject: the file must be a YAML mapping"),
    ],
)
def test_load_errors(make_project, monkeypatch, text: str, expected: str) -> None:
    directory = make_project(text)
    monkeypatch.chdir(directory)  # so the message names the file as "MLproject"
    assert load_error(directory).message.startswith(expected)


@pytest.mark.parametrize(
    ("text", "files", "expected"),
    [
        ("conda_env: nope.yaml\n", {}, "MLproject: conda_env: file 'nope.yaml' not found in"),
        ("python_env: nope.yaml\n", {}, "MLproject: python_env: file 'nope.yaml' not found in"),
        ("python_env: 3\n", {}, "MLproject: python_env: must be a file name"),
        (
            "conda_env: c.yaml\npython_env: p.yaml\n",
            {"c.yaml": "", "p.yaml": ""},
            "MLproject: more than one environment: conda_env, python_env",
        ),
        ("docker_env: {volumes: []}\n", {}, "MLproject: docker_env.image: missing or empty"),
        ("docker_env: ubuntu\n", {}, "MLproject: docker_env: must be a mapping with an image"),
        (
            "docker_env: {image: x, volume: []}\n",
            {},
            "MLproject: docker_env.volume: unknown key (did you mean 'volumes'?)",
        ),
        (
            "docker_env: {image: x, volumes: /a:/b}\n",
            {},
            "MLproject: docker_env.volumes: must be a list of strings",
        ),
        (
            "docker_env: {image: x, environment: {A: 1}}\n",
            {},
            "MLproject: docker_env.environment: must be a list",
        ),
    ],
)
def test_env_errors(make_project, monkeypatch, text: str, files: dict, expected: str) -> None:
    directory = make_project(text, files)
    monkeypatch.chdir(directory)
    assert load_error(directory).message.startswith(expected)


@pytest.mark.parametrize(
    ("docker", "expected"),
    [
        # the engine took these as its own flags: `--help` printed docker's help as the run (FINISHED)
        ("{image: '--help'}", "docker_env.image: '--help' is not an image name"),
        ("{image: 'ubuntu --privileged'}", "docker_env.image: 'ubuntu --privileged' is not an image name"),
        ('{image: "ubuntu\\0"}', "docker_env.image: 'ubuntu\\x00' is not an image name"),
        ("{image: x, volumes: ['--privileged']}", "docker_env.volumes: '--privileged' is not a volume"),
        ('{image: x, volumes: ["/data\\0:/d"]}', "docker_env.volumes: '/data\\x00:/d' is not a volume"),
        # the engine refused these only once the run existed (exit 125), or set something else
        ("{image: x, environment: [['', v]]}", "docker_env.environment: '' is not a variable name"),
        ("{image: x, environment: [[A=B, v]]}", "docker_env.environment: 'A=B' is not a variable name"),
        ('{image: x, environment: [["A\\nB", v]]}', "docker_env.environment: 'A\\nB' is not a variable name"),
        ("{image: x, environment: [[1, v]]}", "docker_env.environment: 1 is not a variable name"),
        (
            "{image: x, environment: [[A, null]]}",
            "docker_env.environment: A: the value must be text or a number, not null",
        ),
        (
            "{image: x, environment: [[A, {b: 1}]]}",
            "docker_env.environment: A: the value must be text or a number, not dict",
        ),
        # a traceback (embedded null byte) from starting the engine, the run left FAILED internal_error
        (
            '{image: x, environment: [[A, "a\\0b"]]}',
            "docker_env.environment: A: the value contains a NUL byte",
        ),
    ],
)
def test_hostile_docker_env_is_refused_before_anything_runs(
    make_project, monkeypatch, docker, expected
) -> None:
    directory = make_project(f"name: d\ndocker_env: {docker}\n" + MAIN)
    monkeypatch.chdir(directory)
    error = load_error(directory)
    assert error.message == f"MLproject: {expected}", error.message
    assert "hint: " not in error.message and error.hint.startswith("write ")


def test_whole_document_is_validated_at_once(make_project, monkeypatch) -> None:
    directory = make_project(
        """
        nmae: x
        entry_points:
          main:
            parameters: {lr: flot, n: {type: int, default: x}}
            command: python x.py {lr} {missing}
        """
    )
    monkeypatch.chdir(directory)
    error = load_error(directory)
    assert error.message == "MLproject: 4 problems:"  # one header line, then one line per problem
    lines = error.details  # type: ignore[attr-defined]
    assert len(lines) == 4
    assert lines[0].startswith("nmae: unknown key")
    assert "parameters.lr: unknown type 'flot'" in lines[1]
    assert "parameters.n.default: 'x' is not an int" in lines[2]
    assert "uses {missing}" in lines[3]
    assert "use one of string, float, int, path, uri" in lines[1]


def test_unknown_type_as_shorthand_hints_at_default(make_project) -> None:
    error = load_error(
        make_project("entry_points:\n  main:\n    parameters: {who: world}\n    command: echo {who}\n")
    )
    assert "unknown type 'world'" in error.message and "{default: ...}" in error.message


def test_malformed_yaml_names_file_and_line(make_project, monkeypatch) -> None:
    directory = make_project("name: x\nentry_points:\n  main:\n    command: [unclosed\n  other: 1\n")
    monkeypatch.chdir(directory.parent)
    error = load_error(directory)
    assert error.message.startswith("proj/MLproject: line ")
    assert "invalid YAML" in error.message


def test_malformed_yaml_line_number(make_project, monkeypatch) -> None:
    directory = make_project("name: x\nentry_points:\n  main:\n    command: a: b\n")
    monkeypatch.chdir(directory)
    assert load_error(directory).message.startswith("MLproject: line 4, column 15: invalid YAML")


def test_literal_braces(make_project) -> None:
    directory = make_project(
        """entry_points:\n  main:\n    command: "python x.py --json '{{\\"a\\": 1}}' {{b}}"\n"""
    )
    result = load_project(directory).entry_point("main").resolve({})
    assert (
        result.shell == "python x.py --json '{\"a\": 1}' {b}"
    )  # {b} unquoted: brace expansion is shell syntax


@pytest.mark.parametrize("kind", ["fifo", "device-link", "dangling-link"])
def test_a_default_env_file_that_is_not_a_file_is_an_error_not_no_environment(tmp_path, kind):
    """conda.yaml as a FIFO or a link to /dev/zero used to read as "no environment file": the run
    went ahead in the wrong interpreter. It is refused, naming the file."""
    project = tmp_path / "p"
    project.mkdir()
    (project / "MLproject").write_text("name: p\nentry_points:\n  main:\n    command: python -c pass\n")
    env = project / "conda.yaml"
    if kind == "fifo":
        os.mkfifo(env)
    else:
        env.symlink_to("/dev/zero" if kind == "device-link" else project / "gone.yaml")
    with pytest.raises(ProjectError, match="conda.yaml: not a regular file"):
        load_project(project)
