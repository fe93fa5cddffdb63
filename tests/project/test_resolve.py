"""EntryPoint.resolve: substitution, defaults, typing, paths, extras, script entry points, errors."""

from __future__ import annotations

import functools
import http.server
import threading

import pytest

from mlkit.errors import ProjectError
from mlkit.project import load_project, shell_argv

TRAIN = """
entry_points:
  main:
    parameters:
      alpha: float
      epochs: {type: int, default: 3}
      name: {type: string, default: "my run"}
    command: "python train.py --alpha {alpha} --epochs={epochs} --name {name}"
  data:
    parameters:
      data: {type: path, default: data.txt}
      out: {type: uri, default: "file:///tmp/out"}
    command: "python prep.py {data} {out}"
  piped:
    parameters: {n: {type: int, default: 1}}
    command: "python train.py --n {n} | tee log.txt"
"""


@pytest.fixture
def project(make_project):
    return load_project(make_project(TRAIN, {"data.txt": "x\n", "train.py": "", "run.sh": "echo hi\n"}))


def resolve_error(entry, params: dict, **kwargs) -> ProjectError:
    with pytest.raises(ProjectError) as info:
        entry.resolve(params, **kwargs)
    assert "\n" not in info.value.message and info.value.hint
    return info.value


def test_substitution_defaults_and_params_to_log(project) -> None:
    result = project.entry_point("main").resolve({"alpha": "0.5"})
    assert result.argv == ["python", "train.py", "--alpha", "0.5", "--epochs=3", "--name", "my run"]
    assert result.shell is None
    assert result.params == {"alpha": "0.5", "epochs": "3", "name": "my run"}
    assert result.types == {"alpha": "float", "epochs": "int", "name": "string"}
    assert result.extra == []


def test_user_values_override_defaults(project) -> None:
    result = project.entry_point("main").resolve({"name": "x", "alpha": "1e-3", "epochs": "-2"})
    assert result.argv == ["python", "train.py", "--alpha", "1e-3", "--epochs=-2", "--name", "x"]
    assert list(result.params) == ["alpha", "epochs", "name"]  # declaration order


def test_extra_params_are_appended_in_given_order(project) -> None:
    result = project.entry_point("main").resolve({"zeta": "z z", "alpha": "1", "beta": ""})
    assert result.argv[-4:] == ["--zeta", "z z", "--beta", ""]
    assert result.extra == ["zeta", "beta"]
    assert result.params == {"alpha": "1", "epochs": "3", "name": "my run", "zeta": "z z", "beta": ""}
    assert result.types["zeta"] == "string"


def test_missing_required_parameter(project, monkeypatch) -> None:
    monkeypatch.chdir(project.directory)
    error = resolve_error(load_project(project.directory).entry_point("main"), {})
    assert error.message == "MLproject: entry_points.main: missing required parameter 'alpha' (float)"
    assert error.hint == "pass -P alpha=<float>"


def test_several_missing_parameters_are_all_named(make_project) -> None:
    directory = make_project(
        "entry_points:\n  main:\n    parameters: {a: int, b: string}\n    command: x {a} {b}\n"
    )
    error = resolve_error(load_project(directory).entry_point("main"), {})
    assert "missing required parameters 'a' (int), 'b' (string)" in error.message
    assert error.hint == "pass -P a=<int> -P b=<string>"


@pytest.mark.parametrize(
    ("params", "message", "hint"),
    [
        (
            {"alpha": "abc"},
            "entry_points.main.parameters.alpha: 'abc' is not a float (type float)",
            "-P alpha=0.01",
        ),
        (
            {"alpha": "1", "epochs": "2.5"},
            "entry_points.main.parameters.epochs: '2.5' is not an int (type int)",
            "-P epochs=10",
        ),
        ({"alpha": "1", "epochs": "ten"}, "parameters.epochs: 'ten' is not an int", "whole number"),
        ({"alpha": " 1"}, "parameters.alpha: ' 1' is not a float", "number"),
        ({"alpha": "1e999"}, "parameters.alpha: '1e999' is too large for a float", "number"),
    ],
)
def test_numbers_are_validated(project, params: dict, message: str, hint: str) -> None:
    error = resolve_error(project.entry_point("main"), params)
    assert message in error.message and hint in error.hint


@pytest.mark.parametrize("value", ["1", "-1.5", "+.5", "2.", "1E+3", "inf", "-Infinity", "nan"])
def test_valid_floats(project, value: str) -> None:
    assert project.entry_point("main").resolve({"alpha": value}).argv[3] == value


def test_uri_is_validated(project) -> None:
    error = resolve_error(project.entry_point("data"), {"out": "relative/dir"})
    assert "parameters.out: 'relative/dir' is not a URI" in error.message
    assert project.entry_point("data").resolve({"out": "s3://b/k"}).argv[-1] == "s3://b/k"


def test_path_given_by_user_is_relative_to_cwd(project, tmp_path, monkeypatch) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "mine.csv").write_text("1\n")
    monkeypatch.chdir(elsewhere)
    result = project.entry_point("data").resolve({"data": "mine.csv"})
    assert result.argv[2] == str(elsewhere / "mine.csv")
    assert result.params["data"] == "mine.csv"  # the raw value is what gets logged


def test_path_default_is_relative_to_the_project(project, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = project.entry_point("data").resolve({})
    assert result.argv == ["python", "prep.py", str(project.directory / "data.txt"), "file:///tmp/out"]


def test_path_file_uri_and_missing_path(project, tmp_path) -> None:
    target = project.directory / "data.txt"
    assert project.entry_point("data").resolve({"data": f"file://{target}"}).argv[2] == str(target)
    error = resolve_error(project.entry_point("data"), {"data": str(tmp_path / "nope.csv")})
    assert "parameters.data: " in error.message and "no such file or directory" in error.message


def test_remote_path_without_storage_dir_is_passed_through(project) -> None:
    assert project.entry_point("data").resolve({"data": "s3://bucket/x.csv"}).argv[2] == "s3://bucket/x.csv"


def test_remote_path_that_cannot_be_downloaded(project, tmp_path) -> None:
    error = resolve_error(project.entry_point("data"), {"data": "s3://bucket/x.csv"}, storage_dir=tmp_path)
    assert "mlkit cannot download s3:// paths" in error.message and "type: uri" in error.hint


def test_remote_http_path_is_downloaded_to_storage_dir(project, tmp_path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    (served / "remote.csv").write_text("a,b\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/remote.csv"
        result = project.entry_point("data").resolve({"data": url}, storage_dir=tmp_path / "storage")
        local = tmp_path / "storage" / "param_0" / "remote.csv"
        assert result.argv[2] == str(local) and local.read_text() == "a,b\n"
        assert result.params["data"] == url
        error = resolve_error(
            project.entry_point("data"), {"data": url + ".missing"}, storage_dir=tmp_path / "s2"
        )
        assert "could not download" in error.message
    finally:
        server.shutdown()


def test_shell_operators_give_a_shell_command(project) -> None:
    result = project.entry_point("piped").resolve({"n": "4", "x y": "a b"})
    assert result.argv is None
    assert result.shell == "python train.py --n 4 | tee log.txt --'x y' 'a b'"
    assert shell_argv(result.shell) == ["bash", "-c", result.shell]


@pytest.mark.parametrize(
    ("command", "shell"),
    [
        ("python a.py && python b.py", True),
        ("python a.py; echo done", True),
        ("python a.py > out.txt", True),
        ("python a.py $HOME", True),
        ("python a.py *.csv", True),
        ("python a.py ~/data", True),
        ("python a.py # a comment", True),
        ("FOO=1 python a.py", True),
        ("cd src", True),
        ("python a.py 'a;b' \"c|d\" e#f", False),
        ("python a.py --opt=x", False),
        ('python a.py "$HOME"', True),
        ("python a.py '$HOME'", False),
    ],
)
def test_when_a_shell_is_needed(make_project, command: str, shell: bool) -> None:
    yaml_cmd = command.replace("\\", "\\\\").replace('"', '\\"')
    directory = make_project(f'entry_points:\n  main:\n    command: "{yaml_cmd}"\n')
    result = load_project(directory).entry_point("main").resolve({})
    assert (result.shell is not None) is shell and (result.argv is None) is shell


def test_quoted_placeholder_stays_one_word(make_project) -> None:
    directory = make_project(
        'entry_points:\n  main:\n    parameters: {m: string}\n    command: "python a.py --msg \'hello {m}!\' \\"{m}\\""\n'
    )
    result = load_project(directory).entry_point("main").resolve({"m": "a b"})
    assert result.argv == ["python", "a.py", "--msg", "hello a b!", "a b"]


def test_script_entry_points(project, monkeypatch) -> None:
    py = project.entry_point("train.py").resolve({"lr": "0.1", "name": "two words"})
    assert py.argv == ["python", "train.py", "--lr", "0.1", "--name", "two words"]
    assert py.extra == ["lr", "name"] and py.types == {"lr": "string", "name": "string"}
    monkeypatch.setenv("SHELL", "/bin/zsh")
    assert project.entry_point("run.sh").resolve({"a": "1"}).argv == ["/bin/zsh", "run.sh", "--a", "1"]
    monkeypatch.delenv("SHELL")
    assert project.entry_point("run.sh").resolve({}).argv == ["bash", "run.sh"]


def test_script_in_directory_without_mlproject(make_project) -> None:
    directory = make_project(None, {"sub/job.py": ""})
    assert load_project(directory).entry_point("sub/job.py").resolve({}).argv == ["python", "sub/job.py"]


def test_unknown_entry_point_lists_the_known_ones(project, monkeypatch) -> None:
    monkeypatch.chdir(project.directory.parent)
    with pytest.raises(ProjectError) as info:
        project.entry_point("trian")
    assert info.value.message == "proj/MLproject: no entry point 'trian' (entry points: data, main, piped)"
    assert "-e" in info.value.hint
    with pytest.raises(ProjectError) as info:
        project.entry_point("missing.py")
    assert "entry point 'missing.py': no such file" in info.value.message


def test_main_in_directory_without_mlproject(make_project) -> None:
    directory = make_project(None, {"train.py": ""})
    with pytest.raises(ProjectError) as info:
        load_project(directory).entry_point("main")
    assert "(no MLproject file): no entry point 'main' (entry points: none)" in info.value.message


@pytest.mark.parametrize("key", ["", "a=b", "../up", "/abs", "x;y", "a//b"])
def test_bad_parameter_names(project, key: str) -> None:
    error = resolve_error(project.entry_point("train.py"), {key: "1"})
    assert f"parameter name {key!r} is not allowed" in error.message


def test_nul_byte_in_value_is_rejected(project) -> None:
    error = resolve_error(project.entry_point("train.py"), {"a": "x\x00y"})
    assert "parameters.a: the value contains a NUL byte" in error.message
