"""project_files against git itself: a real repository, nested .gitignore files, negations.

The oracle is `git ls-files --others --exclude-standard` (the untracked files git does not
ignore) and `git check-ignore`, run with no global or system excludes so that only the
repository's own .gitignore files count, as in mlkit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mlkit.runner.fingerprint import SKIP_DIRS, SKIP_SUFFIXES, project_files

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")

FILES = [
    "MLproject",
    "train.py",
    "run.log",
    "keep.log",
    "notes.tmp",
    "build/out.bin",
    "build/keep.txt",  # re-included by !build/keep.txt, but build/ is excluded: git keeps it out
    "logs/a.txt",
    "logs/important.txt",  # !logs/important.txt under logs/* (not logs/): git re-includes it
    "src/model.py",
    "src/debug.log",
    "src/cache.dat",
    "src/cache.keep",
    "src/gen/a.py",
    "src/gen/b.py",
    "src/gen/.gitignore",
    "src/sub/deep.log",
    "src/sub/wanted.log",
    "src/sub/x.tmp",
    "data/raw/a.csv",
    "data/raw/b/c.csv",
    "data/processed/p.csv",
    "outputs/o.txt",
    "src/outputs/o.txt",
    "docs/a.md",
    "docs/b.md",
    "name with space.txt",
]
GITIGNORES = {
    ".gitignore": "# root\n*.log\n!keep.log\n*.tmp\nbuild/\n!build/keep.txt\nlogs/*\n!logs/important.txt\n"
    "data/**/*.csv\n!data/processed/*.csv\n/outputs/\ndocs/b.md\n",
    "src/.gitignore": "*.dat\n!wanted.log\ngen/\n",
    "src/gen/.gitignore": "!b.py\n",
    "src/sub/.gitignore": "!*.tmp\n",
}


def _git(
    repo: Path, *args: str, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    home = repo.parent / "home"
    home.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),  # no ~/.gitconfig, no ~/.config/git/ignore
        "XDG_CONFIG_HOME": str(home / ".config"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "LC_ALL": "C",
    }
    return subprocess.run(
        ["git", "-c", "core.quotePath=false", *args],
        cwd=repo,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        check=check,
        timeout=30,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q")
    (root / ".git" / "info" / "exclude").write_text("")  # the template's comments only, made sure
    for rel in FILES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    for rel, text in GITIGNORES.items():
        (root / rel).write_text(text)
    return root


def _git_files(repo: Path) -> list[str]:
    out = _git(repo, "ls-files", "--others", "--exclude-standard", "-z").stdout
    found = [p for p in out.split("\0") if p]
    # what mlkit leaves out on top of .gitignore (stores, caches, .pyc) is not git's business
    return sorted(
        p for p in found if not set(p.split("/")[:-1]) & SKIP_DIRS and not p.endswith(SKIP_SUFFIXES)
    )


def test_same_files_as_git(repo: Path) -> None:
    assert project_files(repo) == _git_files(repo)


def test_a_file_under_an_excluded_directory_stays_excluded(repo: Path) -> None:
    """git cannot re-include a file whose parent directory is excluded (gitignore(5))."""
    files = project_files(repo)
    assert "build/keep.txt" not in files and "src/gen/b.py" not in files
    assert "logs/important.txt" in files  # logs/* excludes the files, not the directory
    assert _git(repo, "check-ignore", "-q", "build/keep.txt", check=False).returncode == 0


def test_nested_gitignore_files_count(repo: Path) -> None:
    files = project_files(repo)
    assert "src/cache.dat" not in files and "src/cache.keep" in files
    assert "src/sub/wanted.log" in files and "src/sub/deep.log" not in files
    assert "src/sub/x.tmp" in files  # a deeper !*.tmp overrides the root's *.tmp
    for rel in ("src/sub/wanted.log", "src/sub/x.tmp"):
        assert _git(repo, "check-ignore", "-q", rel, check=False).returncode == 1, rel


def test_every_path_agrees_with_check_ignore(repo: Path) -> None:
    """Each file on disk: in project_files exactly when `git check-ignore` says it is not ignored."""
    on_disk = sorted(
        str(p.relative_to(repo))
        for p in repo.rglob("*")
        if p.is_file() and ".git" not in p.relative_to(repo).parts
    )
    out = _git(repo, "check-ignore", "--stdin", "-z", check=False, stdin="\0".join(on_disk) + "\0").stdout
    ignored = {p for p in out.split("\0") if p}
    files = set(project_files(repo))
    assert ignored, "git check-ignore found nothing: the oracle is broken"
    for rel in on_disk:
        assert (rel in files) == (rel not in ignored), rel


def test_symlinked_directory_is_a_file_for_gitignore(repo: Path, tmp_path: Path) -> None:
    """git sees a link to a directory as a file: `dir/` patterns do not match it."""
    (tmp_path / "elsewhere").mkdir()
    (repo / "linked").symlink_to(tmp_path / "elsewhere")
    (repo / ".gitignore").write_text(GITIGNORES[".gitignore"] + "linked/\n")
    assert "linked" in project_files(repo)
    assert project_files(repo) == _git_files(repo)
