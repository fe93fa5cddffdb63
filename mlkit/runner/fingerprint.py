"""`--skip-if-done`: a fingerprint of what a run depends on, and the finished run that matches it.

The fingerprint is sha256 over: the content of the project directory (see `project_content_hash`),
the entry point name, the parameters (defaults included) as sorted key=value, and the env hash.
docs/mlproject.md ("What --skip-if-done compares") lists exactly what counts.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pathspec import GitIgnoreSpec

if TYPE_CHECKING:
    from mlkit.tracking.entities import Run

FINGERPRINT_TAG = "mlkit.fingerprint"
_VERSION = b"mlkit-fingerprint-v1"
# Never part of a project's content: VCS data, stores, caches, virtualenvs.
SKIP_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        "mlruns",
        "__pycache__",
        ".ipynb_checkpoints",
        ".venv",
        ".tox",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
    }
)
SKIP_SUFFIXES = (".pyc", ".pyo")
_CHUNK = 1 << 20


def _read_ignore_file(directory: Path) -> GitIgnoreSpec | None:
    """The patterns of `directory/.gitignore`, or None when it is absent, unreadable or empty."""
    try:
        text = (directory / ".gitignore").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    spec = GitIgnoreSpec.from_lines(text.splitlines())
    return spec if len(spec) else None


def _ignored(specs: dict[str, GitIgnoreSpec], rel: str, is_dir: bool) -> bool:
    """Whether git ignores `rel`, whose parent directories are not ignored (the walk pruned those).

    `specs` maps a directory ("" or "a/b/") to its .gitignore. As in git, the deepest .gitignore
    with a matching pattern decides, and within one file the last matching pattern wins.
    """
    parts = rel.split("/")
    for depth in range(len(parts) - 1, -1, -1):
        base = "".join(part + "/" for part in parts[:depth])
        spec = specs.get(base)
        if spec is None:
            continue
        verdict = spec.check_file(rel[len(base) :] + ("/" if is_dir else "")).include
        if verdict is not None:
            return verdict
    return False


def project_files(project_dir: Path) -> list[str]:
    """The project's files that count, as sorted relative POSIX paths.

    Those git would list as untracked and not ignored (`git ls-files --others --exclude-standard`)
    when only the project's own .gitignore files count: each directory's .gitignore is read, an
    ignored directory is not entered (so nothing under it can be re-included, as in git), and a
    link to a directory is a file, hashed as a link and not walked.
    """
    specs: dict[str, GitIgnoreSpec] = {}
    found: list[str] = []
    for root, dirs, files in os.walk(project_dir):
        rel_root = os.path.relpath(root, project_dir).replace(os.sep, "/")
        prefix = "" if rel_root == "." else rel_root + "/"
        spec = _read_ignore_file(Path(root))
        if spec is not None:
            specs[prefix] = spec
        kept = [d for d in dirs if d not in SKIP_DIRS]
        links = [d for d in kept if os.path.islink(os.path.join(root, d))]
        dirs[:] = sorted(d for d in kept if d not in links and not _ignored(specs, prefix + d, True))
        for name in files + links:
            rel = prefix + name
            if not name.endswith(SKIP_SUFFIXES) and not _ignored(specs, rel, False):
                found.append(rel)
    return sorted(found)


def project_content_hash(project_dir: Path | str) -> str:
    """sha256 over every file that counts: its relative path, then its bytes (links: their target)."""
    project_dir = Path(project_dir)
    digest = hashlib.sha256()
    for rel in project_files(project_dir):
        path = project_dir / rel
        digest.update(rel.encode("utf-8", "surrogateescape") + b"\0")
        if path.is_symlink():
            digest.update(b"link\0" + os.readlink(path).encode("utf-8", "surrogateescape") + b"\0")
            continue
        try:
            with open(path, "rb") as handle:
                while chunk := handle.read(_CHUNK):
                    digest.update(chunk)
        except OSError as exc:  # unreadable (a socket, no permission): its name and the reason count
            digest.update(f"unreadable:{exc.errno}".encode())
        digest.update(b"\0")
    return digest.hexdigest()


def compute_fingerprint(
    project_dir: Path | str, entry_point: str, params: dict[str, str], env_hash: str | None
) -> str:
    """sha256 of (project content, entry point, sorted key=value params, env hash) as hex."""
    digest = hashlib.sha256(_VERSION + b"\0")
    digest.update(b"code\0" + project_content_hash(project_dir).encode() + b"\0")
    digest.update(b"entry_point\0" + entry_point.encode() + b"\0")
    for key in sorted(params):
        value = params[key]
        pair = f"{len(key)}:{key}={len(value)}:{value}"  # length-prefixed: no two dicts give one text
        digest.update(b"param\0" + pair.encode("utf-8", "surrogateescape") + b"\0")
    digest.update(b"env\0" + (env_hash or "").encode() + b"\0")
    return digest.hexdigest()


def find_finished_run(store: Any, experiment_id: str, fingerprint: str) -> Run | None:
    """The newest FINISHED, not deleted run of `experiment_id` tagged with `fingerprint`, or None."""
    if not re.fullmatch(r"[0-9a-f]{64}", fingerprint):
        return None  # not one of ours: nothing can match, and it must not reach the filter
    runs, _ = store.search_runs(
        [experiment_id],
        filter_string=f"tags.`{FINGERPRINT_TAG}` = '{fingerprint}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
        run_view="active",
    )
    return runs[0] if runs else None
