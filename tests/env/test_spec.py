"""EnvSpec: parsing, validation with file+entry in the message, and the content hash."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlkit.env import EnvRef, env_hash
from mlkit.env.spec import load_spec, python_request
from mlkit.errors import EnvSpecError

CONDA = """\
name: demo
channels:
  - conda-forge
  - defaults
dependencies:
  - python=3.11
  - pip
  - numpy>=1.24
  - pytorch=2.3
  - pip:
    - scikit-learn==1.2
    - tinypkg>=1
"""


def conda_ref(path: Path) -> EnvRef:
    return EnvRef("conda", path)


def test_conda_yaml_parsed(tmp_path, kit):
    f = kit.write(tmp_path / "conda.yaml", CONDA)
    spec = load_spec(tmp_path, conda_ref(f))
    assert spec.kind == "conda" and spec.name == "demo"
    assert spec.channels == ("conda-forge", "defaults")
    assert spec.conda_deps == ("python=3.11", "pip", "numpy>=1.24", "pytorch=2.3")
    assert [p.text for p in spec.pip] == ["scikit-learn==1.2", "tinypkg>=1"]
    assert [p.name for p in spec.pip] == ["scikit-learn", "tinypkg"]
    assert spec.python == "3.11.*"
    assert not spec.pip_only and spec.non_pip_conda_deps == ["numpy>=1.24", "pytorch=2.3"]
    assert spec.lockfile is None and spec.hash == spec.spec_hash and len(spec.hash) == 16


def test_python_env_parsed(tmp_path, kit):
    f = kit.write(
        tmp_path / "python_env.yaml", 'python: "3.10"\nbuild_dependencies: [pip]\ndependencies: [numpy]\n'
    )
    spec = load_spec(tmp_path, EnvRef("python", f))
    assert spec.kind == "python" and spec.python == "3.10.*" and spec.build_dependencies == ("pip",)
    assert python_request(spec.python) == "3.10"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "dependencies:\n  - python=3.11\n  - pip\n  - numpy\n  - numpy=>1.2\n",
            "conda.yaml: dependencies[3]: 'numpy=>1.2' is not a valid version spec",
        ),
        ("dependencies:\n  - {foo: bar}\n", "conda.yaml: dependencies[0]: invalid conda dependency"),
        (
            "dependencies:\n  - pip:\n    - 'numpy>>1'\n",
            "conda.yaml: dependencies[0].pip[0]: 'numpy>>1' is not a valid requirement",
        ),
        ("channels: conda-forge\n", "conda.yaml: channels: must be a list"),
        ("dependencies: [a\n", "conda.yaml: line 2, column 1: invalid YAML"),
        ("- just\n- a list\n", "conda.yaml: must be a mapping"),
        (
            "dependencies:\n  - pip:\n    - -r missing.txt\n",
            "conda.yaml: dependencies[0].pip[0]: '-r missing.txt': file not found",
        ),
    ],
)
def test_bad_conda_yaml_names_file_and_entry(tmp_path, kit, text, message):
    f = kit.write(tmp_path / "conda.yaml", text)
    with pytest.raises(EnvSpecError) as info:
        load_spec(tmp_path, conda_ref(f))
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("python: 3.10\n", "python_env.yaml: python: must be a string"),
        ('python: "3.11"\nextra: 1\n', "python_env.yaml: unknown key 'extra'"),
        ("dependencies: numpy\n", "python_env.yaml: dependencies: must be a list"),
        (
            'build_dependencies: ["pip>>1"]\n',
            "python_env.yaml: build_dependencies[0]: 'pip>>1' is not a valid",
        ),
    ],
)
def test_bad_python_env(tmp_path, kit, text, message):
    f = kit.write(tmp_path / "python_env.yaml", text)
    with pytest.raises(EnvSpecError) as info:
        load_spec(tmp_path, EnvRef("python", f))
    assert str(info.value).startswith(message), str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(EnvSpecError, match="conda.yaml: file not found"):
        load_spec(tmp_path, conda_ref(tmp_path / "conda.yaml"))


def _hash(tmp_path: Path, kit, text: str, name="conda.yaml") -> str:
    d = tmp_path / f"p{abs(hash(text))}"
    f = kit.write(d / name, text)
    return env_hash(d, conda_ref(f) if name == "conda.yaml" else EnvRef("python", f))


def test_hash_ignores_order_comments_whitespace_and_name(tmp_path, kit):
    base = _hash(tmp_path, kit, CONDA)
    reordered = """\
# a comment
name: other-name
channels: [conda-forge, defaults]
dependencies:
  - pip:
    - tinypkg>=1      # why
    - scikit-learn==1.2
  - pytorch=2.3
  - numpy >=1.24
  - pip
  - python=3.11
"""
    assert _hash(tmp_path, kit, reordered) == base


def test_hash_changes_with_what_is_installed(tmp_path, kit):
    base = _hash(tmp_path, kit, CONDA)
    assert _hash(tmp_path, kit, CONDA.replace("numpy>=1.24", "numpy>=1.25")) != base
    assert _hash(tmp_path, kit, CONDA.replace("tinypkg>=1", "tinypkg>=2")) != base
    assert _hash(tmp_path, kit, CONDA.replace("python=3.11", "python=3.12")) != base
    swapped = CONDA.replace("  - conda-forge\n  - defaults\n", "  - defaults\n  - conda-forge\n")
    assert _hash(tmp_path, kit, swapped) != base  # channel order is priority


def test_hash_reads_requirements_files(tmp_path, kit):
    d = tmp_path / "proj"
    kit.write(d / "requirements.txt", "tinypkg>=1\n")
    f = kit.write(d / "python_env.yaml", "dependencies:\n  - -r requirements.txt\n")
    spec = load_spec(d, EnvRef("python", f))
    assert [p.text for p in spec.pip] == ["tinypkg>=1"]
    first = spec.hash
    kit.write(d / "requirements.txt", "# comment\ntinypkg>=1\n")
    assert env_hash(d, EnvRef("python", f)) == first
    kit.write(d / "requirements.txt", "tinypkg>=1.1\n")
    assert env_hash(d, EnvRef("python", f)) != first


def test_hash_is_the_lockfile_when_there_is_one(tmp_path, kit):
    d = tmp_path / "proj"
    f = kit.write(d / "conda.yaml", "dependencies: [hello]\n")
    plain = env_hash(d, conda_ref(f))
    lock = """\
version: 1
metadata:
  content_hash: {linux-64: abc}
  channels: [{url: 'file:///c', used_env_vars: []}]
  platforms: [linux-64]
  sources: [conda.yaml]
package:
- {name: hello, version: '1.0', manager: conda, platform: linux-64, dependencies: {}, url: 'file:///c/noarch/hello-1.0-0.tar.bz2', hash: {md5: 00112233445566778899aabbccddeeff}, category: main, optional: false}
"""
    kit.write(d / "conda-lock.yml", lock)
    spec = load_spec(d, conda_ref(f))
    assert spec.lockfile == d / "conda-lock.yml" and spec.lockfile_hash
    assert spec.hash != plain and spec.spec_hash == plain
    kit.write(d / "conda-lock.yml", "# only a comment added\n" + lock)
    assert env_hash(d, conda_ref(f)) == spec.hash
    kit.write(d / "conda-lock.yml", lock.replace("00112233", "99999999"))
    assert env_hash(d, conda_ref(f)) != spec.hash


def test_no_env_file_has_no_hash(tmp_path):
    assert env_hash(tmp_path, None) is None


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        (
            "{platforms: [linux-64], custom_metadata: [1, 2]}",
            "conda-lock.yml: metadata.custom_metadata: must be a mapping",
        ),
        ("{platforms: [linux-64], channels: 5}", "conda-lock.yml: metadata.channels: must be a list"),
    ],
)
def test_a_lockfile_of_the_wrong_shape_is_one_line_naming_the_key(tmp_path, kit, metadata, expected):
    d = tmp_path / "proj"
    f = kit.write(d / "conda.yaml", "dependencies: [hello]\n")
    kit.write(d / "conda-lock.yml", f"version: 1\nmetadata: {metadata}\npackage: []\n")
    with pytest.raises(EnvSpecError) as info:
        load_spec(d, conda_ref(f))
    assert info.value.message == expected and "mlkit env lock" in info.value.hint


def test_a_lockfile_with_other_keys_in_its_custom_metadata_is_read(tmp_path, kit):
    d = tmp_path / "proj"
    f = kit.write(d / "conda.yaml", "dependencies: [hello]\n")
    kit.write(
        d / "conda-lock.yml",
        "version: 1\nmetadata: {platforms: [linux-64], custom_metadata: {1: x, mlkit.spec_hash: abc}}\npackage: []\n",
    )
    spec = load_spec(d, conda_ref(f))
    assert spec.lockfile_spec_hash == "abc" and spec.lockfile_hash


@pytest.mark.parametrize(
    "entry",
    [
        "tinypkg\\n--index-url http://127.0.0.1:9/simple",  # a second line uv would read as an option
        "--pre\\n-r /dev/zero",  # a -r mlkit never read (nor bounded, nor hashed)
        "./local\\r-e /",
        "-e ./a\\x0b-r /dev/zero",
    ],
)
@pytest.mark.parametrize("kind", ["python", "conda"])
def test_a_pip_entry_holding_a_line_break_is_refused(tmp_path, kit, entry, kind):
    if kind == "python":
        f = kit.write(tmp_path / "python_env.yaml", f'dependencies: ["{entry}"]\n')
        where = "python_env.yaml: dependencies[0]"
    else:
        f = kit.write(tmp_path / "conda.yaml", f'dependencies:\n  - pip:\n    - "{entry}"\n')
        where = "conda.yaml: dependencies[0].pip[0]"
    with pytest.raises(EnvSpecError, match="line break") as err:
        load_spec(tmp_path, EnvRef(kind, f))
    assert err.value.message.startswith(where) and "\n" not in err.value.message


LOCK_PACKAGE = (
    "version: 1\nmetadata: {{platforms: [linux-64]}}\npackage:\n"
    "- {{name: hello, version: '1', manager: conda, platform: linux-64, url: 'file:///c/hello-1-0.tar.bz2', {rest}}}\n"
)


@pytest.mark.parametrize(
    ("rest", "expected"),
    [
        ("hash: [1]", "conda-lock.yml: package[0]: hash: must be a mapping"),
        ("hash: {md5: [1]}", "conda-lock.yml: package[0]: hash.md5: must be a string"),
        (
            "hash: {md5: abc}, dependencies: [a, b]",
            "conda-lock.yml: package[0]: dependencies: must be a mapping",
        ),
    ],
)
def test_a_locked_package_of_the_wrong_shape_is_one_line(tmp_path, kit, rest, expected):
    d = tmp_path / "proj"
    f = kit.write(d / "conda.yaml", "dependencies: [hello]\n")
    kit.write(d / "conda-lock.yml", LOCK_PACKAGE.format(rest=rest))
    with pytest.raises(EnvSpecError) as info:
        load_spec(d, conda_ref(f))
    assert info.value.message == expected


def test_a_lockfile_alias_bomb_is_refused_before_it_is_expanded(tmp_path, kit):
    """conda-lock.yml is read on every run (its hash is the env's): it gets the bounded reader too."""
    d = tmp_path / "proj"
    f = kit.write(d / "conda.yaml", "dependencies: [hello]\n")
    bomb = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    bomb += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 7)]  # 10**7 values
    kit.write(
        d / "conda-lock.yml",
        "\n".join(bomb) + "\n" + LOCK_PACKAGE.format(rest="hash: {md5: abc}, dependencies: {world: *a6}"),
    )
    with pytest.raises(EnvSpecError, match=r"conda-lock.yml: line \d+: .*alias bomb"):
        load_spec(d, conda_ref(f))


@pytest.mark.parametrize(
    "rest",
    [
        'manager: pip, name: "tinypkg\\n-r /dev/zero", url: "file:///w/tinypkg-1.0-py3-none-any.whl"',
        'manager: pip, name: tinypkg, url: "file:///w/t.whl\\n--index-url http://127.0.0.1:9"',
        "manager: pip, name: tinypkg, url: 'file:///w/t.whl', hash: {sha256: \"ab\\n--pre\"}",
    ],
)
def test_a_locked_entry_holding_a_line_break_is_refused(tmp_path, kit, rest):
    """Locked pip entries become `name @ url --hash=...` lines of the file uv reads."""
    d = tmp_path / "proj"
    f = kit.write(d / "conda.yaml", "dependencies: [hello]\n")
    kit.write(
        d / "conda-lock.yml",
        f"version: 1\nmetadata: {{platforms: [linux-64]}}\npackage:\n- {{version: '1', platform: linux-64, {rest}}}\n",
    )
    with pytest.raises(EnvSpecError, match=r"conda-lock.yml: package\[0\]: .* line break"):
        load_spec(d, conda_ref(f))


@pytest.mark.parametrize("name", ["A=B", ""])
def test_a_variable_name_the_run_cannot_set_is_refused(tmp_path, kit, name):
    """`variables: {"A=B": x}` was a ValueError traceback when the run's process was started."""
    f = kit.write(tmp_path / "conda.yaml", f'dependencies: []\nvariables: {{"{name}": x}}\n')
    with pytest.raises(EnvSpecError) as err:
        load_spec(tmp_path, conda_ref(f))
    assert err.value.message == f"conda.yaml: variables: {name!r} is not a variable name"
