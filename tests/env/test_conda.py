"""The conda manager with py-rattler against a local file:// channel made in the test; lockfiles."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mlkit import settings
from mlkit.env import EnvRef, prepare_env
from mlkit.env.lockfile import current_platform, read_lockfile
from mlkit.env.solve import make_lockfile
from mlkit.errors import EnvBuildError, EnvSpecError, UsageError

pytestmark = pytest.mark.conda


def project_with(tmp_path: Path, kit, channel: Path, deps: str = "[hello]") -> tuple[Path, EnvRef]:
    project = tmp_path / "proj"
    f = kit.write(
        project / "conda.yaml", f"name: demo\nchannels:\n  - {channel.as_uri()}\ndependencies: {deps}\n"
    )
    return project, EnvRef("conda", f)


def _env_dirs() -> list[Path]:
    root = settings.env_dir()
    return [p for p in root.iterdir() if p.name not in ("logs", ".locks")] if root.exists() else []


def test_solve_install_and_run_script_from_path(tmp_path, kit, conda_channel):
    project, ref = project_with(tmp_path, kit, conda_channel)
    prepared = prepare_env(project, ref)  # auto: `hello` is no PyPI package here -> conda
    assert prepared.manager == "conda" and not prepared.reused
    assert "does not satisfy it" in prepared.message
    assert prepared.env_vars["CONDA_PREFIX"] == str(prepared.path)
    assert prepared.env_vars["PATH"].startswith(str(prepared.path / "bin"))
    assert "__linux" in prepared.tags["mlkit.env.virtual_packages"]
    assert (prepared.path / "conda-meta").is_dir()
    out = subprocess.run(["hello"], env=kit.env_for(prepared), capture_output=True, text=True)
    assert out.stdout.strip() == "hello-from-conda"
    installed = sorted(p.name for p in (prepared.path / "conda-meta").glob("*.json"))
    assert installed == ["hello-1.0-0.json", "world-1.2-0.json"]  # the newest world that fits
    assert prepare_env(project, ref).reused


def test_lockfile_written_readable_by_conda_lock_and_installed_without_solving(
    tmp_path, kit, conda_channel, mlkit_cli
):
    project, ref = project_with(tmp_path, kit, conda_channel)
    proc = mlkit_cli("env", "lock", str(project), "-p", "linux-64", "-p", "osx-arm64")
    assert proc.returncode == 0, proc.stderr
    lockfile = project / "conda-lock.yml"
    assert f"wrote {lockfile}" in proc.stderr and "without __cuda" in proc.stderr

    import yaml
    from conda_lock.lockfile import parse_conda_lock_file
    from conda_lock.lockfile.v1.models import Lockfile as LockfileV1

    raw = yaml.safe_load(lockfile.read_text())
    assert raw["version"] == 1
    LockfileV1.model_validate({k: v for k, v in raw.items() if k != "version"})
    parsed = parse_conda_lock_file(lockfile)
    assert sorted(parsed.metadata.platforms) == ["linux-64", "osx-arm64"]
    assert set(parsed.metadata.content_hash) == {"linux-64", "osx-arm64"}
    by_platform = {(p.name, p.platform) for p in parsed.package}
    assert ("hello", "linux-64") in by_platform and ("world", "osx-arm64") in by_platform
    hello = next(p for p in parsed.package if p.name == "hello")
    assert hello.manager == "conda" and hello.hash.md5 and hello.hash.sha256
    assert hello.dependencies == {"world": ">=1"} and hello.url.endswith("/noarch/hello-1.0-0.tar.bz2")

    # install from the lockfile alone: the channel's index is gone, so a solve would fail
    for index in conda_channel.rglob("repodata*"):
        index.unlink()
    prepared = prepare_env(project, ref, "conda")
    assert prepared.tags["mlkit.env.lockfile_hash"] == read_lockfile(lockfile).content_hash
    assert prepared.hash == prepared.tags["mlkit.env.hash"] != prepared.tags["mlkit.env.lockfile_hash"]
    assert prepared.tags["mlkit.env.lock_cuda"] == "none" and "without __cuda" in prepared.message
    log = (settings.env_dir() / "logs" / f"{prepared.hash}-conda.log").read_text()
    assert "no solve" in log and "solving" not in log
    out = subprocess.run(["hello"], env=kit.env_for(prepared), capture_output=True, text=True)
    assert out.stdout.strip() == "hello-from-conda"


def test_lock_with_cuda_and_a_pip_part(tmp_path, kit, conda_channel, wheelhouse):
    kit.make_conda_pkg(conda_channel, "python", "3.11.7")  # metadata only: enough to lock against
    kit.index_channel(conda_channel)
    project, ref = project_with(tmp_path, kit, conda_channel, "[python=3.11, hello, {pip: [tinypkg>=1]}]")
    result = make_lockfile(project, ref, ["linux-64"], cuda="12.4")
    assert result.notes == [] and "__cuda=12.4" in result.virtual_packages["linux-64"]
    lock = read_lockfile(result.path)
    pip = lock.for_platform("linux-64", "pip")
    assert [(p.name, p.version) for p in pip] == [("tinypkg", "1.2")]
    assert pip[0].url.endswith("tinypkg-1.2-py3-none-any.whl") and len(pip[0].sha256) == 64
    assert "__cuda=12.4" in lock.virtual_packages["linux-64"]


def test_stale_lockfile_is_refused(tmp_path, kit, conda_channel):
    project, ref = project_with(tmp_path, kit, conda_channel)
    make_lockfile(project, ref)
    ref.path.write_text(ref.path.read_text().replace("[hello]", "[hello, world]"))
    with pytest.raises(EnvSpecError, match="conda-lock.yml: out of date"):
        prepare_env(project, ref, "conda")


def test_a_fresh_lockfile_is_parsed_once_and_a_change_to_either_file_is_seen(
    tmp_path, kit, conda_channel, monkeypatch
):
    """The lockfile freshness check is remembered (mlkit.env.memo): the second run of a locked
    project does not parse the lockfile again, and a changed conda.yaml or lockfile is checked anew."""
    from mlkit.env import lockfile as lockfile_module

    project, ref = project_with(tmp_path, kit, conda_channel)
    make_lockfile(project, ref)
    reads: list[Path] = []
    real_read = lockfile_module.read_lockfile

    def counting_read(path: Path):
        reads.append(path)
        return real_read(path)

    monkeypatch.setattr(lockfile_module, "read_lockfile", counting_read)
    first = prepare_env(project, ref, "conda")
    parsed_by_first = len(reads)
    assert parsed_by_first >= 1
    assert prepare_env(project, ref, "conda").reused
    assert len(reads) == parsed_by_first  # answered by the memo: not parsed again

    lock = project / "conda-lock.yml"
    lock.write_text(lock.read_text() + "# a comment\n")  # other bytes, the same lock: read again
    assert prepare_env(project, ref, "conda").hash == first.hash
    assert len(reads) > parsed_by_first

    ref.path.write_text(ref.path.read_text().replace("[hello]", "[hello, world]"))
    with pytest.raises(EnvSpecError, match="conda-lock.yml: out of date"):
        prepare_env(project, ref, "conda")  # the spec changed: never answered from the memo


def test_unsatisfiable_spec_is_one_line_and_leaves_nothing(tmp_path, kit, conda_channel):
    project, ref = project_with(tmp_path, kit, conda_channel, "['hello>=5']")
    with pytest.raises(EnvBuildError) as info:
        prepare_env(project, ref, "conda")
    assert info.value.message.startswith("conda.yaml: cannot be solved") and "\n" not in info.value.message
    assert "build log:" in info.value.hint
    assert _env_dirs() == []


def test_missing_channel(tmp_path, kit):
    project, ref = project_with(tmp_path, kit, tmp_path / "nowhere")
    with pytest.raises(EnvBuildError) as info:
        prepare_env(project, ref, "conda")
    assert "channel" in info.value.message and "\n" not in info.value.message
    assert _env_dirs() == []


def test_conda_exe_missing_is_one_line(tmp_path, kit, conda_channel):
    project, ref = project_with(tmp_path, kit, conda_channel)
    with pytest.raises(UsageError, match="--conda-exe no-such-micromamba: not found on PATH"):
        prepare_env(project, ref, "conda", conda_exe="no-such-micromamba")
    assert _env_dirs() == []


def test_conda_exe_is_called_with_create_prefix_file(tmp_path, kit, conda_channel, monkeypatch):
    fake = kit.write(
        tmp_path / "bin" / "micromamba",
        '#!/bin/sh\necho "$@" > "$ARGS_OUT"\nprefix=""\nwhile [ $# -gt 0 ]; do\n'
        '  if [ "$1" = "-p" ]; then prefix="$2"; fi\n  if [ "$1" = "--file" ]; then cp "$2" "$FILE_OUT"; fi\n'
        '  shift\ndone\nmkdir -p "$prefix/bin" "$prefix/conda-meta"\n',
    )
    fake.chmod(0o755)
    args_out, file_out = tmp_path / "args", tmp_path / "file"
    project, ref = project_with(tmp_path, kit, conda_channel)
    monkeypatch.setenv("ARGS_OUT", str(args_out))
    monkeypatch.setenv("FILE_OUT", str(file_out))
    prepared = prepare_env(project, ref, "conda", conda_exe=str(fake))
    argv = args_out.read_text().split()
    assert argv[:4] == ["create", "--yes", "-p", str(prepared.path)] and "--file" in argv
    assert "hello" in file_out.read_text() and conda_channel.as_uri() in file_out.read_text()
    assert prepared.manager == "conda" and (prepared.path / ".mlkit-complete").is_file()

    make_lockfile(project, ref)  # with a lockfile: an @EXPLICIT file of the locked URLs
    prepare_env(project, ref, "conda", conda_exe=str(fake))
    explicit = file_out.read_text().splitlines()
    assert explicit[0] == "@EXPLICIT" and any(
        line.startswith(conda_channel.as_uri()) and "#" in line for line in explicit
    )


def test_current_platform_is_known():
    assert current_platform() in ("linux-64", "linux-aarch64", "osx-64", "osx-arm64", "win-64")


SCRIPT = """\
import sys, tinypkg, mlkit
assert sys.prefix == sys.argv[1], (sys.prefix, sys.argv[1])
with mlkit.start_run() as run:
    mlkit.log_metric("answer", tinypkg.VALUE)
print(run.info.run_id)
"""


@pytest.mark.skipif(current_platform() != "linux-64", reason="the test's python package is linux-64")
def test_conda_env_with_python_and_pip_part_runs_mlkit(tmp_path, kit, conda_channel, wheelhouse, store_root):
    kit.make_python_conda_pkg(conda_channel)
    kit.index_channel(conda_channel)
    deps = "[python=3, hello, {pip: [tinypkg>=1.1]}]"
    project, ref = project_with(tmp_path, kit, conda_channel, deps)
    kit.write(project / "train.py", SCRIPT)

    def run_in(prepared) -> str:
        proc = subprocess.run(
            ["python", "train.py", str(prepared.path)],
            cwd=project,
            env=kit.env_for(prepared),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip().splitlines()[-1]

    from mlkit.tracking.store import FileStore

    prepared = prepare_env(project, ref, "conda")
    assert prepared.python == prepared.path / "bin" / "python"
    assert prepared.tags["mlkit.env.python_version"] == ".".join(map(str, __import__("sys").version_info[:3]))
    assert FileStore(store_root).get_run(run_in(prepared)).data.metrics["answer"] == 42.0

    # locked: conda records and the pip wheel (URL + sha256), installed with no solve/resolution
    make_lockfile(project, ref)
    pip = read_lockfile(project / "conda-lock.yml").for_platform("linux-64", "pip")
    assert [(p.name, p.version) for p in pip] == [("tinypkg", "1.2")]
    locked = prepare_env(project, ref, "conda")
    assert locked.path != prepared.path and "mlkit.env.lockfile_hash" in locked.tags
    log = (settings.env_dir() / "logs" / f"{locked.hash}-conda.log").read_text()
    assert "1 locked pip packages" in log and "--require-hashes" in log
    assert FileStore(store_root).get_run(run_in(locked)).data.metrics["answer"] == 42.0


@pytest.mark.parametrize("cuda", ["abc", "-1", "12.4\nx", "12.4.1.2.3"])
def test_a_cuda_version_that_is_not_one_is_a_usage_error(tmp_path, kit, conda_channel, mlkit_cli, cuda):
    """`--cuda -1` was a rattler InvalidVersionError traceback; `--cuda abc` locked `__cuda=abc`."""
    project, _ref = project_with(tmp_path, kit, conda_channel)
    result = mlkit_cli("env", "lock", str(project), "-p", "linux-64", "--cuda", cuda)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"Error: --cuda {cuda!r}: not a CUDA version" in result.stderr
    assert not (project / "conda-lock.yml").exists()
