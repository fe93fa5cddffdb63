"""What a run records about where it came from: MLflow's project tags and mlkit's provenance.

Git facts are read from the `.git` directory itself (HEAD, refs, packed-refs, config): no git
binary, no gitpython, a few file reads.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from mlkit import __version__
from mlkit.digest import sha256_hex
from mlkit.procid import hostname
from mlkit.tracking.lost import ownership_tags as tags_of

_SHA_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_CREDENTIALS_RE = re.compile(r"^(\w+://)[^/@]*@")


@dataclass(frozen=True, eq=False)
class GitInfo:
    """The repository a project directory lives in."""

    root: Path
    commit: str | None
    remote_url: str | None
    branch: str | None


def _git_dirs(start: Path) -> tuple[Path, Path, Path] | None:
    """(work tree root, git dir, common dir) for the repository containing `start`."""
    for folder in (start, *start.parents):
        dot_git = folder / ".git"
        if dot_git.is_dir():
            return folder, dot_git, dot_git
        if dot_git.is_file():  # a worktree or submodule: "gitdir: <path>"
            try:
                text = dot_git.read_text().strip()
            except OSError:
                return None
            if not text.startswith("gitdir:"):
                return None
            git_dir = (folder / text[len("gitdir:") :].strip()).resolve()
            common = git_dir
            commondir = git_dir / "commondir"
            if commondir.is_file():
                common = (git_dir / commondir.read_text().strip()).resolve()
            return folder, git_dir, common
    return None


def _read_ref(git_dir: Path, common: Path, ref: str) -> str | None:
    for base in (git_dir, common):
        path = base / ref
        if path.is_file():
            value = path.read_text().strip()
            return value if _SHA_RE.match(value) else None
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text().splitlines():
            if line and not line.startswith(("#", "^")):
                sha, _, name = line.partition(" ")
                if name.strip() == ref and _SHA_RE.match(sha):
                    return sha
    return None


def git_info(path: Path) -> GitInfo | None:
    """The repository containing `path` (searching parent directories), or None."""
    try:
        found = _git_dirs(path.resolve())
        if found is None:
            return None
        root, git_dir, common = found
        head = (git_dir / "HEAD").read_text().strip()
        branch = None
        if head.startswith("ref:"):
            ref = head[4:].strip()
            branch = ref.removeprefix("refs/heads/")
            commit = _read_ref(git_dir, common, ref)
        else:
            commit = head if _SHA_RE.match(head) else None
        return GitInfo(root=root, commit=commit, remote_url=_first_remote(common / "config"), branch=branch)
    except (OSError, UnicodeDecodeError):
        return None


def _first_remote(config_path: Path) -> str | None:
    if not config_path.is_file():
        return None
    try:
        text = config_path.read_text()
    except OSError:
        return None
    if "[remote" not in text:  # no remote at all: no need to load the parser
        return None
    # import budget: configparser loads only to read a git config; a plain mlkit run never loads it
    import configparser

    parser = configparser.ConfigParser(strict=False, interpolation=None)
    try:
        parser.read_string(text, source=str(config_path))
    except configparser.Error:
        return None
    for section in parser.sections():
        if section.startswith('remote "') and parser.has_option(section, "url"):
            return _CREDENTIALS_RE.sub(r"\1", parser.get(section, "url"))
    return None


def file_hash(path: Path | None) -> str | None:
    """sha256 of a file's bytes, or None when there is no such file."""
    if path is None:
        return None
    try:
        return sha256_hex(Path(path).read_bytes())  # no OpenSSL to load on every run (mlkit/digest.py)
    except OSError:
        return None


def current_user() -> str:
    """MLflow's `mlflow.user`: getpass.getuser(), `unknown` when that fails."""
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def source_name(project_dir: Path, git: GitInfo | None) -> str:
    """`file://<repo root>#<subdir>` inside git (as MLflow writes it), else the absolute path."""
    project_dir = project_dir.resolve()
    if git is None:
        return str(project_dir)
    rel = os.path.relpath(project_dir, git.root)
    return f"file://{git.root}" + ("" if rel == "." else f"#{rel}")


def run_tags(
    *,
    project_dir: Path,
    entry_point: str,
    mlkit_argv: list[str],
    command: list[str] | None,
    mlproject_file: Path | None,
    env_file: Path | None,
    fingerprint: str | None,
    user: str,
) -> dict[str, str]:
    """The tags a run gets at creation (MLflow's project tags + mlkit provenance)."""
    git = git_info(project_dir)
    tags = {
        "mlflow.user": user,
        "mlflow.source.name": source_name(project_dir, git),
        "mlflow.source.type": "PROJECT",
        "mlflow.project.entryPoint": entry_point,
        "mlflow.project.backend": "local",
        "mlkit.argv": json.dumps(mlkit_argv),
        "mlkit.version": __version__,
        "mlkit.host": hostname(),
        "mlkit.python": sys.version.split()[0],  # what platform.python_version() parses
    }
    if command is not None:
        tags["mlkit.command"] = json.dumps(command)
    if git is not None:
        if git.commit:
            tags["mlflow.source.git.commit"] = git.commit
        if git.remote_url:
            tags["mlflow.source.git.repoURL"] = git.remote_url
            tags["mlflow.gitRepoURL"] = git.remote_url
        if git.branch:
            tags["mlkit.git.branch"] = git.branch
    for key, path in (("mlkit.mlproject_hash", mlproject_file), ("mlkit.conda_yaml_hash", env_file)):
        digest = file_hash(path)
        if digest:
            tags[key] = digest
    if fingerprint:
        tags["mlkit.fingerprint"] = fingerprint
    return tags


def ownership_tags() -> dict[str, str]:
    """mlkit.host / mlkit.pid / mlkit.pid_start for this process (mlkit.procid reads the start
    time the way `mlkit.tracking.lost` compares it)."""

    return tags_of(os.getpid())
