"""A rebuildable SQLite cache of run summaries beside the data: `<root>/.mlkit-index.sqlite`.

The files stay the truth; the cache only saves re-reading them. Every cached value carries the
stat signature (mtime, ctime, size, inode) of the file or directory it came from, and every
query re-stats what its answer depends on before trusting it:

- always a run's meta.yaml (status, times, lifecycle) and the run directory listing;
- for each entity kind a filter or order_by names (metrics, params, tags): that directory (a new
  key changes its ctime) and, for each run, the named key's file (appends and in-place rewrites);
- for the runs returned: every directory and file of the run.

A run whose signatures differ is re-read whole (metric files from the last offset: they are
append-only). Signatures taken less than a second after the change are stored as "racy" and
re-checked next time (timestamps are coarse). Any SQLite error means "no cache": the answer is
computed from the files, and a corrupt file is removed and rebuilt.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlkit.errors import StoreError
from mlkit.tracking import files
from mlkit.tracking.entities import INT_TO_STATUS
from mlkit.tracking.layout import RESERVED_EXPERIMENT_DIRS

INDEX_FILE = ".mlkit-index.sqlite"
SCHEMA_VERSION = 3  # 1: one JSON doc per run; 2: runs columns + kv rows; 3: kv clustered by (kind, key)
RACY_NS = 1_000_000_000
KIND_DIRS = {"metric": "metrics", "param": "params", "tag": "tags"}
ATTR_COLUMNS = ("experiment_id", "run_name", "user_id", "status", "start_time", "end_time",
                "artifact_uri", "lifecycle_stage")  # fmt: skip
_RUN_COLUMNS = ("run_id", "exp_id", "meta_sig", "metric_sig", "param_sig", "tag_sig", *ATTR_COLUMNS)
_SCHEMA = f"""
CREATE TABLE runs ({", ".join(c + (" TEXT PRIMARY KEY" if c == "run_id" else "") for c in _RUN_COLUMNS)});
CREATE INDEX runs_exp ON runs (exp_id);
CREATE TABLE kv (kind TEXT, key TEXT, run_id TEXT, value TEXT, sig TEXT, extra TEXT,
                 PRIMARY KEY (kind, key, run_id)) WITHOUT ROWID;
CREATE INDEX kv_run ON kv (run_id);
"""


def file_sig(path: str) -> str:
    """mtime.ctime.size.inode of a path, '' when it does not exist."""
    try:
        st = os.stat(path)
    except OSError:
        return ""
    return f"{st.st_mtime_ns}.{st.st_ctime_ns}.{st.st_size}.{st.st_ino}"


def _stored_sig(path: str, now_ns: int) -> str:
    """The signature to store: 'racy' (never matches) when the path changed within the last second."""
    try:
        st = os.stat(path)
    except OSError:
        return ""
    if now_ns - max(st.st_ctime_ns, st.st_mtime_ns) < RACY_NS:
        return "racy"
    return f"{st.st_mtime_ns}.{st.st_ctime_ns}.{st.st_size}.{st.st_ino}"


def dir_sig(top: str, stored: str) -> str:
    """Signature of a kind directory and the subdirectories the stored signature names."""
    parts = stored.split("|")
    fresh = [file_sig(top)]
    for part in parts[1:]:
        rel = part.split("=", 1)[0]
        fresh.append(f"{rel}={file_sig(f'{top}/{rel}')}")
    return "|".join(fresh)


def _walk(top: str, now_ns: int) -> tuple[str, list[str]]:
    """(signature of top and its subdirs, every file key under top), stat taken before listing."""
    sigs = [_stored_sig(top, now_ns)]
    keys: list[str] = []
    base = len(top) + 1
    stack = [top]
    while stack:
        current = stack.pop()
        if current != top:
            sigs.append(f"{current[base:]}={_stored_sig(current, now_ns)}")
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            elif not (entry.name.startswith(".") and entry.name.endswith(".tmp")):
                keys.append(entry.path[base:])
    return "|".join(sigs), keys


def read_meta(run_dir: str) -> dict[str, Any]:
    """The attributes of a run from its meta.yaml."""
    meta = files.read_yaml(Path(run_dir) / "meta.yaml")
    status = meta.get("status", 1)
    return {
        "run_id": str(meta.get("run_id") or meta.get("run_uuid") or os.path.basename(run_dir)),
        "experiment_id": str(meta.get("experiment_id", "")),
        "run_name": str(meta.get("run_name") or ""),
        "user_id": str(meta.get("user_id") or "unknown"),
        "status": INT_TO_STATUS.get(status, str(status)) if isinstance(status, int) else str(status),
        "start_time": meta.get("start_time"),
        "end_time": meta.get("end_time") or None,
        "artifact_uri": str(meta.get("artifact_uri") or ""),
        "lifecycle_stage": str(meta.get("lifecycle_stage") or "active"),
    }


@dataclass
class IndexedRun:
    """One run as the index knows it: attributes, and values of some (or all) keys."""

    run_id: str
    exp_id: str
    run_dir: str
    info: dict[str, Any]
    sigs: dict[str, str]  # meta / metric / param / tag directory signatures
    values: dict[tuple[str, str], tuple[str, str, str]] = field(
        default_factory=dict
    )  # (kind,key)->(value,sig,extra)
    complete: bool = False  # values holds every key of the run, checked against the files

    def split(self) -> tuple[dict[str, str], dict[str, str], dict[str, float]]:
        """(params, tags, metrics) in one pass over the values (metric values as floats)."""
        params: dict[str, str] = {}
        tags: dict[str, str] = {}
        metrics: dict[str, float] = {}
        for (kind, key), (value, _sig, _extra) in self.values.items():
            if kind == "param":
                params[key] = value
            elif kind == "tag":
                tags[key] = value
            elif value != "":
                metrics[key] = float(value)
        return params, tags, metrics


def _read_metric(
    path: str, key: str, old: tuple[str, str, str] | None, now_ns: int
) -> tuple[str, str, str] | None:
    """(latest value repr, sig, extra json [step, ts, count, offset, ino]) read from the last offset."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    start, count, best = 0, 0, None
    if old is not None and old[2]:
        step, ts, old_count, offset, ino = json.loads(old[2])
        if ino == st.st_ino and st.st_size >= offset:
            start, count = offset, old_count
            best = (step, ts, float(old[0])) if old_count else None
    try:
        with open(path, "rb") as fh:  # only up to the size stat'ed: later appends are seen next time
            fh.seek(start)
            data = fh.read(max(0, st.st_size - start))
    except OSError:
        return None
    metrics, consumed = files.parse_metric_lines(data, key, path)
    for m in metrics:
        cand = (m.step, m.timestamp, m.value)
        if best is None or cand > best:
            best = cand
    count += len(metrics)
    recent = now_ns - max(st.st_mtime_ns, st.st_ctime_ns) < RACY_NS
    sig = "racy" if recent else f"{st.st_mtime_ns}.{st.st_ctime_ns}.{st.st_size}.{st.st_ino}"
    if best is None:
        return "", sig, json.dumps([0, 0, 0, start + consumed, st.st_ino])
    return repr(best[2]), sig, json.dumps([best[0], best[1], count, start + consumed, st.st_ino])


def read_run(run_dir: str, run_id: str, exp_id: str, old: dict[tuple[str, str], tuple[str, str, str]],
             now_ns: int) -> IndexedRun:  # fmt: skip
    """Read a run whole from its files (metrics incrementally, from `old`)."""
    meta_sig = _stored_sig(f"{run_dir}/meta.yaml", now_ns)
    info = read_meta(run_dir)
    run = IndexedRun(run_id, exp_id, run_dir, info, {"meta": meta_sig}, {}, True)
    for kind, sub in KIND_DIRS.items():
        top = f"{run_dir}/{sub}"
        run.sigs[kind], keys = _walk(top, now_ns)
        for key in keys:
            path = f"{top}/{key}"
            if kind == "metric":
                entry = _read_metric(path, key, old.get((kind, key)), now_ns)
            else:
                sig = _stored_sig(path, now_ns)
                try:
                    entry = (files.read_value(path), sig, "")  # a str path: no pathlib per file
                except OSError:
                    entry = None
            if entry is not None:
                run.values[(kind, key)] = entry
    if not info["run_name"]:
        info["run_name"] = run.values.get(("tag", "mlflow.runName"), ("",))[0]
    return run


class RunIndex:
    """Run summaries for many runs, checked against the files on every query."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / INDEX_FILE
        self._conn: sqlite3.Connection | None = None
        self._disabled = False

    # ------------------------------------------------------------------ sqlite plumbing
    def _connect(self) -> sqlite3.Connection | None:
        if self._disabled:
            return None
        if self._conn is not None:
            return self._conn
        for attempt in (1, 2):
            try:
                conn = sqlite3.connect(self.path, timeout=15, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA busy_timeout=15000")
                if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("CREATE TABLE IF NOT EXISTS schema (version INTEGER)")
                row = conn.execute("SELECT version FROM schema").fetchone()
                if row is None or row[0] != SCHEMA_VERSION:
                    conn.execute("BEGIN IMMEDIATE")
                    row = conn.execute("SELECT version FROM schema").fetchone()
                    if row is None or row[0] != SCHEMA_VERSION:  # another process may have won
                        conn.execute("DROP TABLE IF EXISTS runs")
                        conn.execute("DROP TABLE IF EXISTS kv")
                        conn.execute("DELETE FROM schema")
                        conn.execute("INSERT INTO schema VALUES (?)", (SCHEMA_VERSION,))
                        for statement in _SCHEMA.split(";"):
                            if statement.strip():
                                conn.execute(statement)
                    conn.execute("COMMIT")
                self._conn = conn
                return conn
            except sqlite3.DatabaseError:
                if attempt == 1 and self._remove_corrupt():
                    continue
                break
            except OSError:
                break
        self._disabled = True  # a read-only store or a broken file: work from the files alone
        return None

    def _remove_corrupt(self) -> bool:
        self.close()
        removed = False
        for suffix in ("", "-wal", "-shm"):
            try:
                os.unlink(f"{self.path}{suffix}")
                removed = True
            except FileNotFoundError:
                continue
            except OSError:
                return False
        return removed

    def close(self) -> None:
        """Close the SQLite connection."""
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def _select(self, sql: str, args: list[Any]) -> list[tuple[Any, ...]]:
        conn = self._connect()
        if conn is None:
            return []
        try:
            return conn.execute(sql, args).fetchall()
        except sqlite3.DatabaseError:
            self._remove_corrupt()
            self._disabled = True
            return []

    def _save(self, runs: list[IndexedRun], gone: list[str]) -> None:
        if not runs and not gone:
            return
        conn = self._connect()
        if conn is None:
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
            dead = [(r,) for r in gone] + [(r.run_id,) for r in runs]
            conn.executemany("DELETE FROM runs WHERE run_id = ?", dead)
            conn.executemany("DELETE FROM kv WHERE run_id = ?", dead)
            conn.executemany(
                f"INSERT INTO runs VALUES ({','.join('?' * len(_RUN_COLUMNS))})",
                [
                    (
                        r.run_id,
                        r.exp_id,
                        r.sigs["meta"],
                        r.sigs["metric"],
                        r.sigs["param"],
                        r.sigs["tag"],
                        *(r.info[c] for c in ATTR_COLUMNS),
                    )
                    for r in runs
                ],  # fmt: skip
            )
            conn.executemany(
                "INSERT INTO kv VALUES (?, ?, ?, ?, ?, ?)",
                [(kind, key, r.run_id, *v) for r in runs for (kind, key), v in r.values.items()],
            )
            conn.execute("COMMIT")
        except sqlite3.DatabaseError:  # busy past the timeout, disk full: the cache is optional
            try:
                conn.execute("ROLLBACK")
            except sqlite3.DatabaseError:
                pass

    def _old_values(self, run_id: str) -> dict[tuple[str, str], tuple[str, str, str]]:
        rows = self._select("SELECT kind, key, value, sig, extra FROM kv WHERE run_id = ?", [run_id])
        return {(kind, key): (value, sig, extra) for kind, key, value, sig, extra in rows}

    def _old_values_many(self, run_ids: list[str]) -> dict[str, dict[tuple[str, str], tuple[str, str, str]]]:
        out: dict[str, dict[tuple[str, str], tuple[str, str, str]]] = {}
        for i in range(0, len(run_ids), 500):
            chunk = run_ids[i : i + 500]
            rows = self._select(
                f"SELECT run_id, kind, key, value, sig, extra FROM kv WHERE run_id IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            for run_id, kind, key, value, sig, extra in rows:
                out.setdefault(run_id, {})[(kind, key)] = (value, sig, extra)
        return out

    # ------------------------------------------------------------------ queries
    def query(
        self, exp_dirs: list[Path], keys: set[tuple[str, str]], attrs: set[str] | frozenset[str] = frozenset()
    ) -> list[IndexedRun]:
        """Every run in these experiment dirs with the values of `keys`, all checked fresh.

        `info` holds run_id, lifecycle_stage, start_time and the attributes named in `attrs`
        (fewer columns read is most of the speed); `complete()` fills in the rest.
        """
        now_ns = time.time_ns()
        exp_ids = [d.name for d in exp_dirs]
        if not exp_ids:
            return []
        columns = [
            "lifecycle_stage",
            "start_time",
            *sorted(set(attrs) & set(ATTR_COLUMNS) - {"lifecycle_stage", "start_time"}),
        ]
        marks = ",".join("?" * len(exp_ids))
        cached = {row[0]: row for row in self._select(
            f"SELECT run_id, exp_id, meta_sig, {', '.join(columns)} FROM runs WHERE exp_id IN ({marks})", exp_ids)}  # fmt: skip
        values: dict[str, dict[tuple[str, str], tuple[str, str, str]]] = {}
        for kind, key in keys:
            for run_id, value, sig, extra in self._select(
                "SELECT run_id, value, sig, extra FROM kv WHERE kind = ? AND key = ?", [kind, key]
            ):
                values.setdefault(run_id, {})[(kind, key)] = (value, sig, extra)
        key_paths = [(kind, key, f"{KIND_DIRS[kind]}/{key}") for kind, key in keys]
        out: list[IndexedRun] = []
        changed: list[IndexedRun] = []
        seen: set[str] = set()
        empty: dict[tuple[str, str], tuple[str, str, str]] = {}
        for exp_dir in exp_dirs:
            exp_id = exp_dir.name
            try:
                entries = list(os.scandir(exp_dir))
            except OSError:
                continue
            for entry in entries:
                name = entry.name
                if name in RESERVED_EXPERIMENT_DIRS or name.startswith(".") or not entry.is_dir():
                    continue
                seen.add(name)
                run_dir = entry.path
                row = cached.get(name)
                mine = values.get(name, empty)
                if row is not None and row[1] == exp_id and self._fresh(run_dir, row, mine, key_paths):
                    info = dict(zip(columns, row[3:], strict=True))
                    info["run_id"] = name
                    out.append(IndexedRun(name, exp_id, run_dir, info, {"meta": row[2]}, mine))
                    continue
                try:
                    run = read_run(run_dir, name, exp_id, self._old_values(name) if row else {}, now_ns)
                except (StoreError, FileNotFoundError, NotADirectoryError):
                    continue  # no or malformed meta.yaml: skipped, as MLflow does
                out.append(run)
                changed.append(run)
        gone = [run_id for run_id in cached if run_id not in seen]
        self._save(changed, gone)
        return out

    @staticmethod
    def _fresh(
        run_dir: str,
        row: tuple[Any, ...],
        mine: dict[tuple[str, str], tuple[str, str, str]],
        keys: list[tuple[str, str, str]],
    ) -> bool:
        """True when meta.yaml and the files of the queried keys are as cached (1 stat each)."""
        if file_sig(f"{run_dir}/meta.yaml") != row[2]:
            return False
        for kind, key, rel in keys:
            cached = mine.get((kind, key))
            if cached is None:
                if os.path.lexists(f"{run_dir}/{rel}"):
                    return False  # the key appeared since
            elif kind != "param" and file_sig(f"{run_dir}/{rel}") != cached[1]:
                return False  # appended or rewritten (params are immutable)
        return True

    def complete(self, runs: list[IndexedRun]) -> list[IndexedRun]:
        """The same runs with every attribute and key, each checked against its file."""
        now_ns = time.time_ns()
        out: list[IndexedRun] = []
        changed: list[IndexedRun] = []
        todo = [r.run_id for r in runs if not r.complete]
        olds = self._old_values_many(todo)
        full_rows: dict[str, tuple[Any, ...]] = {}
        for i in range(0, len(todo), 500):
            chunk = todo[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for row in self._select(
                f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs WHERE run_id IN ({marks})", chunk
            ):
                full_rows[row[0]] = row
        for run in runs:
            if run.complete:
                out.append(run)
                continue
            old = olds.get(run.run_id, {})
            found = full_rows.get(run.run_id)
            fresh = False
            if found is not None and not self._disabled and found[2] == run.sigs["meta"]:
                sigs = {"meta": found[2], "metric": found[3], "param": found[4], "tag": found[5]}
                checked = run.values  # these files were stat'ed by query() just now
                fresh = all(dir_sig(f"{run.run_dir}/{KIND_DIRS[k]}", sigs[k]) == sigs[k] for k in KIND_DIRS) and all(
                    kind == "param" or (kind, key) in checked
                    or file_sig(f"{run.run_dir}/{KIND_DIRS[kind]}/{key}") == v[1]
                    for (kind, key), v in old.items()
                )  # fmt: skip
            if fresh and found is not None:
                info = dict(zip(ATTR_COLUMNS, found[6:], strict=True))
                info["run_id"] = run.run_id
                out.append(IndexedRun(run.run_id, run.exp_id, run.run_dir, info, sigs, old, True))
                continue
            try:
                new = read_run(run.run_dir, run.run_id, run.exp_id, old, now_ns)
            except (StoreError, FileNotFoundError, NotADirectoryError):
                continue
            out.append(new)
            changed.append(new)
        self._save(changed, [])
        return out
