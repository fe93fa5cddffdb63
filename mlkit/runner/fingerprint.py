"""`--skip-if-done`: a fingerprint of what a run depends on, and the finished run that matches it.

The fingerprint is sha256 over: the content of the project directory (see `project_content_hash`),
the entry point name, the parameters (defaults included) as sorted key=value, and the env hash.
docs/mlproject.md ("What --skip-if-done compares") lists exactly what counts.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


@dataclass(frozen=True)
class _Rule:
    regex: re.Pattern[str]
    negate: bool
    dir_only: bool
    anchored: bool  # matched against the whole relative path, not just the last name


def _glob_to_regex(glob: str) -> str:
    out, i = [], 0
    while i < len(glob):
        c = glob[i]
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if glob.startswith("/**", i) and i + 3 == len(glob):
            out.append("(?:/.*)?")
            i += 3
            continue
        if c == "*":
            out.append(".*" if glob.startswith("**", i) else "[^/]*")
            i += 2 if glob.startswith("**", i) else 1
            continue
        if c == "?":
            out.append("[^/]")
        elif c == "[" and "]" in glob[i + 1 :]:
            end = glob.index("]", i + 1)
            body = glob[i + 1 : end].replace("\\", "\\\\")
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end
        elif c == "\\" and i + 1 < len(glob):
            i += 1
            out.append(re.escape(glob[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def read_gitignore(project_dir: Path) -> list[_Rule]:
    """The rules of the project's top-level .gitignore (nested .gitignore files are not read)."""
    try:
        lines = (project_dir / ".gitignore").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    rules = []
    for line in lines:
        line = line.rstrip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        line = line[1:] if negate else line
        dir_only = line.endswith("/")
        line = line.rstrip("/")
        anchored = "/" in line
        line = line.lstrip("/")
        if line:
            rules.append(_Rule(re.compile(_glob_to_regex(line)), negate, dir_only, anchored))
    return rules


def _ignored(rules: list[_Rule], rel: str, is_dir: bool) -> bool:
    """gitignore's rule: the last matching pattern wins; a file under an ignored directory is ignored."""
    parts = rel.split("/")
    candidates = [("/".join(parts[: i + 1]), True) for i in range(len(parts) - 1)] + [(rel, is_dir)]
    ignored = False
    for rule in rules:
        for path, path_is_dir in candidates:
            if rule.dir_only and not path_is_dir:
                continue
            target = path if rule.anchored else path.rsplit("/", 1)[-1]
            if rule.regex.fullmatch(target):
                ignored = not rule.negate
                break
    return ignored


def project_files(project_dir: Path) -> list[str]:
    """The project's files that count, as sorted relative POSIX paths."""
    rules = read_gitignore(project_dir)
    can_prune = not any(rule.negate for rule in rules)  # with "!pattern" check every file
    found: list[str] = []
    for root, dirs, files in os.walk(project_dir):
        rel_root = os.path.relpath(root, project_dir).replace(os.sep, "/")
        prefix = "" if rel_root == "." else rel_root + "/"
        kept = [
            d for d in dirs if d not in SKIP_DIRS and not (can_prune and _ignored(rules, prefix + d, True))
        ]
        links = [d for d in kept if os.path.islink(os.path.join(root, d))]  # hashed as links, not walked
        dirs[:] = sorted(d for d in kept if d not in links)
        files = files + links
        for name in files:
            rel = prefix + name
            if not name.endswith(SKIP_SUFFIXES) and not _ignored(rules, rel, False):
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
