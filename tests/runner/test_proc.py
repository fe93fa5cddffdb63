"""The one subprocess helper: argv lists, env overrides, cwd, process groups, timeouts."""

from __future__ import annotations

import os
import sys
import time

import psutil
import pytest

from mlkit import proc
from mlkit.errors import LaunchError
from mlkit.runner.provenance import git_info, source_name


def test_env_overrides_set_and_delete(monkeypatch, tmp_path):
    monkeypatch.setenv("MLKIT_TEST_KEEP", "kept")
    monkeypatch.setenv("MLKIT_TEST_DROP", "dropped")
    code = "import os; print(os.environ.get('MLKIT_TEST_KEEP'), os.environ.get('MLKIT_TEST_DROP'), os.environ.get('MLKIT_TEST_NEW'), os.getcwd())"
    result = proc.run(
        [sys.executable, "-c", code], env={"MLKIT_TEST_DROP": None, "MLKIT_TEST_NEW": "new"}, cwd=tmp_path
    )
    assert result.stdout.split() == ["kept", "None", "new", str(tmp_path)]
    assert os.environ["MLKIT_TEST_DROP"] == "dropped"  # ours is untouched


def test_spawn_starts_a_new_process_group():
    child = proc.spawn([sys.executable, "-c", "import time; time.sleep(5)"], new_session=True)
    try:
        assert os.getpgid(child.pid) == child.pid != os.getpgid(0)
        assert proc.group_alive(child.pid)
    finally:
        proc.terminate_group(child, grace=0.5)
    assert not proc.group_alive(child.pid)


def test_missing_program_is_a_launch_error():
    with pytest.raises(LaunchError, match="command not found: no-such-program-mlkit"):
        proc.spawn(["no-such-program-mlkit", "--x"])


def test_check_raises_with_the_tail_of_stderr():
    with pytest.raises(LaunchError, match="exit code 3: boom"):
        proc.run(
            [sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"], check=True
        )


def test_timeout_kills_the_whole_group(tmp_path):
    pid_file = tmp_path / "grandchild"
    code = (
        "import subprocess, sys, time;"
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)"
    )
    started = time.monotonic()
    with pytest.raises(proc.ProcTimeoutError):
        proc.run([sys.executable, "-c", code], timeout=1.5, grace=0.5)
    assert time.monotonic() - started < 10
    grandchild = int(pid_file.read_text())
    assert not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE


def test_git_info_reads_packed_refs_and_worktree_files(tmp_path):
    repo = tmp_path / "repo"
    (repo / ".git" / "refs" / "heads").mkdir(parents=True)
    sha = "a" * 40
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (repo / ".git" / "packed-refs").write_text(f"# pack-refs with: peeled\n{sha} refs/heads/main\n")
    (repo / ".git" / "config").write_text('[remote "origin"]\n\turl = https://tok@github.com/o/r.git\n')
    (repo / "sub").mkdir()
    info = git_info(repo / "sub")
    assert info is not None
    assert (info.root, info.commit, info.branch) == (repo, sha, "main")
    assert info.remote_url == "https://github.com/o/r.git"
    assert source_name(repo / "sub", info) == f"file://{repo}#sub"
    # a linked worktree: .git is a file pointing at the real git dir
    wt = tmp_path / "wt"
    wt.mkdir()
    gitdir = repo / ".git" / "worktrees" / "wt"
    gitdir.mkdir(parents=True)
    (gitdir / "HEAD").write_text("b" * 40 + "\n")
    (gitdir / "commondir").write_text("../..\n")
    (wt / ".git").write_text(f"gitdir: {gitdir}\n")
    info = git_info(wt)
    assert info is not None and info.commit == "b" * 40 and info.branch is None
    assert info.remote_url == "https://github.com/o/r.git"
    (tmp_path / "plain").mkdir()
    assert git_info(tmp_path / "plain") is None


def test_ownership_tags_match_the_tracking_packages():
    from mlkit.runner.provenance import ownership_tags
    from mlkit.tracking.lost import ownership_tags as psutil_based

    fast, slow = ownership_tags(), psutil_based()
    assert fast["mlkit.pid"] == slow["mlkit.pid"] and fast["mlkit.host"] == slow["mlkit.host"]
    assert abs(float(fast["mlkit.pid_start"]) - float(slow["mlkit.pid_start"])) < 0.02
