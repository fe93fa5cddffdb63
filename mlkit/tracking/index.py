"""A rebuildable SQLite cache of run summaries beside the data: `<root>/.mlkit-index.sqlite`.

The files stay the truth; the cache only saves re-reading them. Every cached value carries the
stat signature (mtime, ctime, size, inode) of the file or directory it came from, and every
query re-stats what its answer depends on before trusting it:

- the experiment directory: listed again unless its signature is the one it had when the cache
  last held exactly its runs (adding, removing or renaming a run changes it);
- for each key a filter or order_by names: that key's file in each run still in question (appends
  and in-place rewrites), or its absence; a cached param needs no stat (params are immutable);
- a run's meta.yaml (status, times, lifecycle) once its keys leave it in the answer;
- for the runs returned: every directory and file of the run.

A filter's clauses on keys are tested as each key is checked, params first, so a run they exclude
costs nothing more; a page without order_by (or in an order_by of metrics, params, tags, start_time
and run_id) is walked in that order only as far as it goes.
A run whose signatures differ is re-read whole (metric files from the last offset: they are
append-only; the 16 bytes before it are checked, and a file rewritten in place is read whole).
Signatures taken less than a second after the change are stored as "racy" and re-checked next
time (timestamps are coarse). Any SQLite error means "no cache": the answer is computed from
the files, and a corrupt file is removed and rebuilt.
"""

from __future__ import annotations

import heapq
import os
import resource
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from mlkit.errors import MalformedMetricError, StoreError
from mlkit.tracking.layout import RESERVED_EXPERIMENT_DIRS
from mlkit.tracking.runsummary import (  # noqa: F401  # re-exported: the index's vocabulary
    JOURNAL_FILE,
    KIND_DIRS,
    RACY_NS,
    IndexedRun,
    dir_sig,
    file_sig,
    parse_journal,
    read_meta,
    read_run,
    stored_sig,
)

INDEX_FILE = ".mlkit-index.sqlite"
BUSY_TIMEOUT_S = 15.0  # how long a query waits for another process's write to the cache
# 1: one JSON doc per run; 2: runs columns + kv rows; 3: kv clustered by (kind, key); 4: exps
SCHEMA_VERSION = 4
ATTR_COLUMNS = ("experiment_id", "run_name", "user_id", "status", "start_time", "end_time",
                "artifact_uri", "lifecycle_stage")  # fmt: skip
_RUN_COLUMNS = ("run_id", "exp_id", "meta_sig", "metric_sig", "param_sig", "tag_sig", *ATTR_COLUMNS)
_OUR_TABLES = {"schema", "runs", "kv", "exps"}
_SCHEMA = f"""
CREATE TABLE runs ({", ".join(c + (" TEXT PRIMARY KEY" if c == "run_id" else "") for c in _RUN_COLUMNS)});
CREATE INDEX runs_exp_start ON runs (exp_id, start_time, run_id);
CREATE TABLE kv (kind TEXT, key TEXT, run_id TEXT, value TEXT, sig TEXT, extra TEXT,
                 PRIMARY KEY (kind, key, run_id)) WITHOUT ROWID;
CREATE INDEX kv_run ON kv (run_id);
CREATE TABLE exps (exp_id TEXT PRIMARY KEY, sig TEXT);
"""
# exps: an experiment directory's signature when the cache last held exactly the runs listed in it
# (RunIndex.query); runs_exp_start: an experiment's run ids and start times without reading its
# rows. Version 3 (the same but these) is brought up to 4 in place, keeping its rows.
_V3_TO_V4 = (
    "CREATE TABLE IF NOT EXISTS exps (exp_id TEXT PRIMARY KEY, sig TEXT)",
    "DROP INDEX IF EXISTS runs_exp",
    "CREATE INDEX IF NOT EXISTS runs_exp_start ON runs (exp_id, start_time, run_id)",
)


class Ordering(NamedTuple):
    """An order_by that a page can be walked in (RunIndex.query): the keys it reads, and how to
    put runs holding fresh values of those keys (and run_id, start_time) in that order."""

    keys: frozenset[tuple[str, str]]
    arrange: Callable[[list[IndexedRun]], list[IndexedRun]]


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
            if not self._ours():
                break  # a link, someone else's file: not ours to open, let alone rebuild
            try:
                conn = sqlite3.connect(
                    self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
                )
                conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if tables and not ("schema" in tables and tables <= _OUR_TABLES):
                    conn.close()  # a database of someone else's, planted under our name
                    break
                if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("CREATE TABLE IF NOT EXISTS schema (version INTEGER)")
                row = conn.execute("SELECT version FROM schema").fetchone()
                if (row is None or row[0] != SCHEMA_VERSION) and not _upgrade(conn):
                    conn.close()  # only our own tables are ever dropped
                    break
                self._conn = conn
                return conn
            except sqlite3.DatabaseError as exc:
                if not _busy(exc) and attempt == 1 and self._remove_corrupt():
                    continue
                break  # busy past the timeout: no cache this time, and the file is left alone
            except OSError:
                break
        self._disabled = True  # a read-only store or a broken file: work from the files alone
        return None

    def _ours(self) -> bool:
        """The cache file and its -wal/-shm are absent, or regular files we own (not links): a
        file another user planted (a link to their own database, say) is never opened."""
        for suffix in ("", "-wal", "-shm"):
            try:
                st = os.lstat(f"{self.path}{suffix}")
            except FileNotFoundError:
                continue
            except OSError:
                return False
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_nlink != 1:
                return False
        return True

    def _remove_corrupt(self) -> bool:
        if not self._ours():
            return False
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
        except sqlite3.DatabaseError as exc:
            if not _busy(exc):  # corrupt: rebuilt next time; busy: another process's, left alone
                self._remove_corrupt()
            self._disabled = True
            return []

    def _save(self, runs: list[IndexedRun], gone: list[str], exp_sigs: dict[str, str] | None = None) -> None:
        """Write these runs' rows, remove those of runs gone, and record experiment directory
        signatures (query()), in one transaction."""
        if not runs and not gone and not exp_sigs:
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
            conn.executemany("INSERT OR REPLACE INTO exps VALUES (?, ?)", list((exp_sigs or {}).items()))
            conn.execute("COMMIT")
        except (sqlite3.DatabaseError, KeyError, TypeError, ValueError, IndexError):
            # busy past the timeout, disk full, an entry of the wrong shape: the cache is optional
            try:
                conn.execute("ROLLBACK")
            except sqlite3.DatabaseError:
                pass

    def _old_values(self, run_id: str) -> dict[tuple[str, str], tuple[str, str, str]]:
        rows = self._select("SELECT kind, key, value, sig, extra FROM kv WHERE run_id = ?", [run_id])
        return {(kind, key): (value, sig, extra) for kind, key, value, sig, extra in rows}

    def _old_values_many(self, run_ids: list[str]) -> dict[str, dict[tuple[str, str], tuple[str, str, str]]]:
        out: dict[str, dict[tuple[str, str], tuple[str, str, str]]] = {}
        sql = "SELECT run_id, kind, key, value, sig, extra FROM kv WHERE"
        for run_id, kind, key, value, sig, extra in self._select_ids(sql, [], run_ids):
            out.setdefault(run_id, {})[(kind, key)] = (value, sig, extra)
        return out

    def _select_ids(self, sql: str, args: list[Any], run_ids: list[str]) -> Iterator[tuple[Any, ...]]:
        """The rows of `sql` (ending in WHERE or AND) run_id IN (...), for these run ids, a chunk of
        them per statement."""
        for i in range(0, len(run_ids), _CHUNK):
            chunk = run_ids[i : i + _CHUNK]
            yield from self._select(f"{sql} run_id IN ({','.join('?' * len(chunk))})", [*args, *chunk])

    # ------------------------------------------------------------------ the writers' journal
    def ingest(self, exp_dirs: list[Path], orphans: list[str] | None = None) -> None:
        """Fold the journals the store's writers append to (mlkit.tracking.runsummary) in these
        experiments into the cache: claim each by renaming it (a writer that comes after starts a
        new one), apply every run's last entry in one transaction, remove it. `orphans`: journals
        claimed by a process that died before removing them. Entries are hints like any cached
        value: each is checked against the files when it is used."""
        paths = list(orphans or [])
        stamp = f"{os.getpid()}-{time.time_ns()}"
        for exp_dir in exp_dirs:
            claimed = f"{exp_dir}/{JOURNAL_FILE}.{stamp}"
            try:
                os.rename(f"{exp_dir}/{JOURNAL_FILE}", claimed)
                paths.append(claimed)
            except OSError:
                continue  # no journal (nothing written since), or a read-only store
        if not paths:
            return
        chunks: dict[str, list[bytes]] = {}  # experiment dir -> its journals, oldest first
        for path in paths:
            data = _read_own(path)
            if data is not None:
                chunks.setdefault(os.path.dirname(path), []).append(data)
        try:
            entries: dict[str, dict[str, Any]] = {}
            for journal_dir, datas in chunks.items():
                exp_id = os.path.basename(journal_dir)
                for run_id, entry in parse_journal(b"".join(datas)).items():
                    # an entry speaks only for a run of the experiment its journal is in
                    if entry["exp"] == exp_id and _is_dir(f"{journal_dir}/{run_id}"):
                        entries[run_id] = entry
            if entries and self._connect() is not None:
                self._apply(entries)
        finally:
            for path in paths:
                try:
                    os.unlink(path)
                except OSError:
                    pass

    def _apply(self, entries: dict[str, dict[str, Any]]) -> None:
        """Write journal entries: a whole run replaces its rows; a partial one (some kinds) updates
        its meta and those kinds, keeping the rest."""
        full: list[IndexedRun] = []
        partial: list[dict[str, Any]] = []
        for entry in entries.values():
            try:
                if set(entry["kinds"]) == set(KIND_DIRS):
                    values = {(v[0], v[1]): (v[2], v[3], v[4]) for v in entry["values"]}
                    full.append(
                        IndexedRun(entry["run"], entry["exp"], "", entry["info"], entry["sigs"], values, True)
                    )
                else:
                    partial.append(entry)
            except (KeyError, IndexError, TypeError, ValueError):
                continue
        self._save(full, [])
        conn = self._connect()
        if not partial or conn is None:
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
            for entry in partial:
                run_id, kinds, sigs, info = entry["run"], list(entry["kinds"]), entry["sigs"], entry["info"]
                if not set(kinds) <= set(KIND_DIRS):  # pasted into SQL below: the fixed names only
                    continue
                sets = ["exp_id", "meta_sig", *(f"{k}_sig" for k in kinds), *ATTR_COLUMNS]
                args = [entry["exp"], sigs.get("meta", ""), *(sigs.get(k, "") for k in kinds)]
                args += [info.get(c) for c in ATTR_COLUMNS]
                updated = conn.execute(
                    f"UPDATE runs SET {', '.join(c + ' = ?' for c in sets)} WHERE run_id = ?", [*args, run_id]
                ).rowcount
                if not updated:
                    row = {"run_id": run_id, "exp_id": entry["exp"], "meta_sig": sigs.get("meta", "")}
                    row.update({f"{k}_sig": sigs.get(k, "") for k in KIND_DIRS})
                    row.update({c: info.get(c) for c in ATTR_COLUMNS})
                    conn.execute(
                        f"INSERT INTO runs VALUES ({','.join('?' * len(_RUN_COLUMNS))})",
                        [row.get(c, "") for c in _RUN_COLUMNS],
                    )
                if kinds:
                    conn.execute(
                        f"DELETE FROM kv WHERE run_id = ? AND kind IN ({','.join('?' * len(kinds))})",
                        [run_id, *kinds],
                    )
                conn.executemany(
                    "INSERT OR REPLACE INTO kv VALUES (?, ?, ?, ?, ?, ?)",
                    [(v[0], v[1], run_id, v[2], v[3], v[4]) for v in entry["values"] if v[0] in kinds],
                )
            conn.execute("COMMIT")
        except (sqlite3.DatabaseError, KeyError, IndexError, TypeError, ValueError):
            try:
                conn.execute("ROLLBACK")
            except sqlite3.DatabaseError:
                pass

    # ------------------------------------------------------------------ queries
    def query(
        self,
        exp_dirs: list[Path],
        keys: set[tuple[str, str]],
        attrs: set[str] | frozenset[str] = frozenset(),
        tests: dict[tuple[str, str], Callable[[str | None], bool]] | None = None,
        first: int | None = None,
        wanted: Callable[[IndexedRun], bool] | None = None,
        order: Ordering | None = None,
    ) -> list[IndexedRun]:
        """Every run in these experiment dirs with the values of `keys`, all checked fresh.

        `info` holds run_id, lifecycle_stage, start_time and the attributes named in `attrs`
        (fewer columns read is most of the speed); `complete()` fills in the rest.

        `tests`: for some of `keys`, a test of the run's value (None when it has none) that every
        run of the answer passes (a filter's clauses on that key). The cached runs go through the
        keys one at a time, params first: a run whose value, checked fresh, fails its key's test
        is left out there, and what it has not been checked for yet (its meta.yaml, its other
        keys) is never looked at. A cached param needs no `stat` (params are immutable), so a run
        a param filter excludes costs none at all. Runs read from their files are returned
        untested.

        `first`: only the first `first` runs in MLflow's default order (start_time DESC, run_id
        ASC) that `wanted` accepts are asked for (a page of a search without order_by). The runs
        left after the params' tests are walked in that order by their cached start times, their
        other keys and meta.yaml checked a chunk at a time, until that many are accepted; the runs
        past them are not returned.
        A run read again (its meta.yaml changed) is returned wherever its start time now puts it
        and does not count towards `first`; a run past the page is not looked at, which relies on
        its start time never changing (MLflow has no call that changes it), as recent() does.

        `order`: the page is in this order instead (an order_by whose keys are metrics, params,
        tags, start_time or run_id): its keys are checked fresh for every run left after the
        params' tests, the runs put in order by `order.arrange` on those values, and walked as
        above. meta.yaml's other attributes (end_time, status, ...) change as a run ends and are
        checked only on the walk, so no page is walked in their order (search.search_rows).
        """
        self.ingest(exp_dirs)
        now_ns = time.time_ns()
        if not exp_dirs:
            return []
        dirs = {d.name: str(d) for d in exp_dirs}
        marks = ",".join("?" * len(dirs))
        cached = self._select(
            f"SELECT run_id, exp_id, start_time FROM runs WHERE exp_id IN ({marks})", list(dirs)
        )
        where: dict[str, str] = {row[0]: row[1] for row in cached}
        starts: dict[str, Any] = {row[0]: row[2] for row in cached}
        # An experiment directory with the signature it had when the cache last held exactly the
        # runs listed in it has the same entries (adding, removing or renaming one changes its
        # mtime and ctime): its runs are the cached ones, and it is not listed again.
        sigs = {exp_id: stored_sig(path, now_ns) for exp_id, path in dirs.items()}  # before listing
        held = dict(self._select(f"SELECT exp_id, sig FROM exps WHERE exp_id IN ({marks})", list(dirs)))
        same = {e for e, sig in sigs.items() if sig not in ("", "racy") and held.get(e) == sig}
        listed, orphans = _listing([d for d in exp_dirs if d.name not in same])
        left = [run_id for run_id, exp_id in where.items() if exp_id in same or listed.get(run_id) == exp_id]
        todo = [run_id for run_id, exp_id in listed.items() if where.get(run_id) != exp_id]
        listed.update((run_id, exp_id) for run_id, exp_id in where.items() if exp_id in same)
        run_dirs = {exp_id: f"{path}/" for exp_id, path in dirs.items()}
        # A page (in the default order, or the order_by's): the params (which need no stat) and
        # the ordered keys are checked now, the other keys and meta.yaml run by run in that
        # order, up to the page.
        ordered = order.keys if order is not None else frozenset()
        lazy = {k for k in keys - ordered if k[0] != "param"} if first is not None else set()
        left, checked = self._key_pass(keys - lazy, tests or {}, left, len(where), listed, run_dirs, todo)
        if first is not None and all(isinstance(starts[r], (int, type(None))) for r in left):
            if order is None:
                left.sort(key=lambda r: _order_of(starts[r], r))
            else:  # by the ordered keys' values, just checked
                bare = [
                    IndexedRun(r, listed[r], "", {"run_id": r, "start_time": starts[r]}, {},
                               {k: checked[k][r] for k in ordered if r in checked[k]})
                    for r in left
                ]  # fmt: skip
                left = [run.run_id for run in order.arrange(bare)]
        else:
            first = None  # a start time SQLite and Python would order differently: walk them all
        columns = [
            "lifecycle_stage",
            "start_time",
            *sorted(set(attrs) & set(ATTR_COLUMNS) - {"lifecycle_stage", "start_time"}),
        ]
        out: list[IndexedRun] = []
        taken, start, step = 0, 0, _WALK_STEP
        while start < len(left) and (first is None or taken < first):
            chunk = left[start:] if first is None else left[start : start + step]
            start, step = start + len(chunk), step * 2
            if lazy:
                chunk, more = self._key_pass(lazy, tests or {}, chunk, len(where), listed, run_dirs, todo)
                for key, known in more.items():
                    checked.setdefault(key, {}).update(known)
            rows = self._runs_rows(chunk, ["meta_sig", *columns], list(dirs), len(where))
            for run_id in chunk:
                if first is not None and taken >= first:
                    break  # the rest come after the page
                exp_id = listed[run_id]
                run_dir = f"{dirs[exp_id]}/{run_id}"
                row = rows.get(run_id)
                if row is None or file_sig(f"{run_dir}/meta.yaml") != row[0]:
                    todo.append(run_id)  # its status, times or lifecycle changed: read it again
                    continue
                info = dict(zip(columns, row[1:], strict=True))
                info["run_id"] = run_id
                mine = {k: known[run_id] for k, known in checked.items() if run_id in known}
                run = IndexedRun(run_id, exp_id, run_dir, info, {"meta": row[0]}, mine)
                out.append(run)
                taken += wanted is None or wanted(run)
        # not cached, or changed since: read from the files (many at once: a few threads)
        reread = [(0, f"{dirs[listed[r]]}/{r}", r, listed[r], r in where) for r in todo]
        olds = self._old_values_many([r for r in todo if r in where]) if todo else {}
        read = _read_runs(reread, olds, now_ns)
        changed = [run for run in read if run is not None]
        # a listed experiment's signature is kept when the cache now holds exactly its runs: none
        # unreadable (a run directory whose meta.yaml is not written yet), no journal left to fold
        unsure = {listed[r] for r, run in zip(todo, read, strict=True) if run is None}
        unsure |= {os.path.basename(os.path.dirname(path)) for path in orphans}
        keep = {
            e: sig for e, sig in sigs.items() if e not in same and e not in unsure and sig not in ("", "racy")
        }
        self._save(changed, [run_id for run_id in where if run_id not in listed], keep)
        if orphans:
            self.ingest([], orphans)
        return out + changed

    def _key_pass(
        self,
        keys: set[tuple[str, str]],
        tests: dict[tuple[str, str], Callable[[str | None], bool]],
        left: list[str],
        cached: int,
        listed: dict[str, str],
        run_dirs: dict[str, str],
        todo: list[str],
    ) -> tuple[list[str], dict[tuple[str, str], dict[str, tuple[str, str, str]]]]:
        """query()'s pass over the keys, params first: (the cached runs in `left` whose value of
        every key is as cached and passes its test, {key: run id -> cached value}). A run whose
        key file changed is put in `todo`, to be read again."""
        checked: dict[tuple[str, str], dict[str, tuple[str, str, str]]] = {}
        for kind, key in sorted(keys, key=lambda k: (k[0] != "param", k)):
            test, rel = tests.get((kind, key)), f"/{KIND_DIRS[kind]}/{key}"
            known = self._passing_params(key, test) if kind == "param" and test else None
            if known is not None:  # every cached run has the param; the runs whose value passes
                left = [run_id for run_id in left if run_id in known]
                checked[(kind, key)] = known
                continue
            known = self._key_values(kind, key, left, cached)
            verdicts: dict[str | None, bool] = {}  # per value: a param has few (lr: 4 in 100,000 runs)
            passed = []
            for run_id in left:
                value = known.get(run_id)
                if value is None:
                    if os.path.lexists(f"{run_dirs[listed[run_id]]}{run_id}{rel}"):
                        todo.append(run_id)  # the key appeared since
                        continue
                elif kind != "param" and file_sig(f"{run_dirs[listed[run_id]]}{run_id}{rel}") != value[1]:
                    todo.append(run_id)  # appended or rewritten
                    continue
                if test is not None:
                    raw = None if value is None else value[0]
                    ok = verdicts.get(raw)
                    if ok is None:
                        ok = verdicts[raw] = test(raw)
                    if not ok:
                        continue
                passed.append(run_id)
            left = passed
            checked[(kind, key)] = known
        return left, checked

    def _key_values(
        self, kind: str, key: str, run_ids: list[str], cached: int
    ) -> dict[str, tuple[str, str, str]]:
        """run id -> cached (value, sig, extra) of one key: read by run id when the runs asked for
        are a small part of the cached ones (`cached`), else the key's rows all at once."""
        sql = "SELECT run_id, value, sig, extra FROM kv WHERE kind = ? AND key = ?"
        if len(run_ids) * _NARROW >= cached:
            return {row[0]: row[1:] for row in self._select(sql, [kind, key])}
        return {row[0]: row[1:] for row in self._select_ids(f"{sql} AND", [kind, key], run_ids)}

    def _passing_params(
        self, key: str, test: Callable[[str | None], bool]
    ) -> dict[str, tuple[str, str, str]] | None:
        """run id -> cached (value, sig, extra) of param `key` where the value passes `test`, the
        test run inside SQLite (once per distinct value), so the runs it leaves out never become
        Python objects. None — test it in Python — unless every cached run has the param (a run
        without it must be checked for it on disk), or when the test raised."""
        conn = self._connect()
        count = (
            "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM kv WHERE kind = 'param' AND key = ?)"
        )
        counts = self._select(count, [key])
        if conn is None or not counts or counts[0][0] != counts[0][1]:
            return None
        verdicts: dict[str | None, bool] = {}  # per value: a param has few (lr: 4 in 100,000 runs)
        raised: list[Exception] = []

        def keep(raw: str | None) -> bool:
            ok = verdicts.get(raw)
            if ok is None:
                try:
                    ok = verdicts[raw] = test(raw)
                except Exception as exc:  # noqa: BLE001  # never into SQLite (it would end the query)
                    raised.append(exc)
                    return True
            return ok

        conn.create_function("mlkit_keep", 1, keep, deterministic=True)
        sql = (
            "SELECT run_id, value, sig, extra FROM kv WHERE kind = 'param' AND key = ? AND mlkit_keep(value)"
        )
        passing = {row[0]: row[1:] for row in self._select(sql, [key])}
        return None if raised else passing

    def _runs_rows(
        self, run_ids: list[str], columns: list[str], exp_ids: list[str], cached: int
    ) -> dict[str, tuple[Any, ...]]:
        """run id -> these columns of its cached row: by run id, or the rows of these experiments
        (`cached` of them) all at once when most are asked for."""
        if len(run_ids) * _NARROW >= cached:
            sql = f"SELECT run_id, {', '.join(columns)} FROM runs WHERE exp_id IN ({','.join('?' * len(exp_ids))})"
            return {row[0]: row[1:] for row in self._select(sql, exp_ids)}
        sql = f"SELECT run_id, {', '.join(columns)} FROM runs WHERE"
        return {row[0]: row[1:] for row in self._select_ids(sql, [], run_ids)}

    def recent(self, exp_dirs: list[Path], stages: tuple[str, ...], limit: int) -> list[IndexedRun] | None:
        """The first `limit` runs of these experiments in MLflow's default order (start_time DESC,
        run_id ASC) whose lifecycle stage is in `stages`, each checked fresh as query() checks a
        run — without looking at the runs further down that order: `mlkit runs list` of a store of
        100,000 runs reads one directory listing and a few dozen meta.yaml signatures, not every
        run. New runs (not cached yet) are read first and take their place in the order. None when
        the cache cannot answer: no cache, or a run whose start time changed (then query() runs)."""
        self.ingest(exp_dirs)
        if self._connect() is None:
            return None
        now_ns = time.time_ns()
        dirs = {d.name: str(d) for d in exp_dirs}
        on_disk = _run_names(exp_dirs)
        rows = self._select(
            f"SELECT run_id, exp_id, meta_sig, lifecycle_stage, start_time FROM runs"
            f" WHERE exp_id IN ({','.join('?' * len(dirs))}) ORDER BY start_time DESC, run_id ASC",
            list(dirs),
        )
        if any(not isinstance(row[4], (int, type(None))) for row in rows):
            return None  # a start time SQLite and Python would order differently
        cached = {row[0] for row in rows}
        todo = [(0, f"{dirs[e]}/{r}", r, e, False) for r, e in on_disk.items() if r not in cached]
        changed = sorted((run for run in _read_runs(todo, {}, now_ns) if run is not None), key=_order)
        merged: Iterator[tuple[tuple[int, str], tuple[Any, ...] | None, IndexedRun | None]] = heapq.merge(
            ((_order_of(row[4], row[0]), row, None) for row in rows),
            ((_order(run), None, run) for run in changed),
            key=lambda item: item[0],
        )
        out: list[IndexedRun] = []
        for _key, row, new in merged:
            run, reread = (new, False) if row is None else self._checked(row, dirs, on_disk, now_ns)
            if row is not None and run is not None and reread:
                changed.append(run)
                if run.info.get("start_time") != row[4]:
                    self._save(changed, [])
                    return None  # it moved in the order: answer from every run instead
            if run is not None and run.info.get("lifecycle_stage", "active") in stages:
                out.append(run)
                if len(out) >= limit:
                    break
        self._save(changed, [])
        return out

    def _checked(
        self, row: tuple[Any, ...], dirs: dict[str, str], on_disk: dict[str, str], now_ns: int
    ) -> tuple[IndexedRun | None, bool]:
        """recent()'s cached run (run_id, exp_id, meta_sig, lifecycle_stage, start_time), as cached
        when its meta.yaml is unchanged, else read again (True); None when it is gone."""
        run_id, exp_id, meta_sig = row[0], row[1], row[2]
        if on_disk.get(run_id) != exp_id:
            return None, False  # removed since (or moved: its new place is read as a new run)
        run_dir = f"{dirs[exp_id]}/{run_id}"
        if file_sig(f"{run_dir}/meta.yaml") == meta_sig:
            info = {"run_id": run_id, "lifecycle_stage": row[3], "start_time": row[4]}
            return IndexedRun(run_id, exp_id, run_dir, info, {"meta": meta_sig}, {}), False
        try:
            return read_run(run_dir, run_id, exp_id, self._old_values(run_id), now_ns), True
        except MalformedMetricError:
            raise  # MLflow cannot read it either: say so, never leave the run out
        except (StoreError, FileNotFoundError, NotADirectoryError):
            return None, False

    def complete(self, runs: list[IndexedRun]) -> list[IndexedRun]:
        """The same runs with every attribute and key, each checked against its file."""
        now_ns = time.time_ns()
        out: list[IndexedRun] = []
        changed: list[IndexedRun] = []
        todo = [r.run_id for r in runs if not r.complete]
        olds = self._old_values_many(todo)
        full_rows = {
            row[0]: row
            for row in self._select_ids(f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs WHERE", [], todo)
        }
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
            except MalformedMetricError:
                raise  # MLflow cannot read it either: say so, never leave the run out
            except (StoreError, FileNotFoundError, NotADirectoryError):
                continue
            out.append(new)
            changed.append(new)
        self._save(changed, [])
        return out


_CHUNK = 500  # run ids per `IN (...)` (SQLite allows 32,766 parameters; small chunks plan well)
_WALK_STEP = 256  # runs a page's walk takes at first (then twice as many each time)
_NARROW = 3  # read a key's values by run id when fewer than 1/_NARROW of the cached runs are left


def _listing(exp_dirs: list[Path]) -> tuple[dict[str, str], list[str]]:
    """(run id -> experiment id of every run directory of these experiments, in listing order;
    journals claimed over a minute ago, by a process now gone)."""
    listed: dict[str, str] = {}
    orphans: list[str] = []
    for exp_dir in exp_dirs:
        exp_id = exp_dir.name
        try:
            entries = list(os.scandir(exp_dir))
        except OSError:
            continue
        for entry in entries:
            name = entry.name
            if name in RESERVED_EXPERIMENT_DIRS or name.startswith(".") or not entry.is_dir():
                if name.startswith(_CLAIMED) and _older_than_a_minute(entry.path):
                    orphans.append(entry.path)
                continue
            listed[name] = exp_id
    return listed, orphans


def _upgrade(conn: sqlite3.Connection) -> bool:
    """Bring the cache to SCHEMA_VERSION under the write lock: version 3 in place (it lacks only
    `exps`), any other rebuilt empty. False, changing nothing, when it holds a table not ours."""
    conn.execute("BEGIN IMMEDIATE")
    row = conn.execute("SELECT version FROM schema").fetchone()  # again: another process may have won
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables <= _OUR_TABLES:
        conn.execute("ROLLBACK")
        return False
    if row is not None and row[0] == 3:
        for statement in _V3_TO_V4:
            conn.execute(statement)
        conn.execute("UPDATE schema SET version = ?", (SCHEMA_VERSION,))
    elif row is None or row[0] != SCHEMA_VERSION:
        for table in ("exps", "runs", "kv"):
            conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute("DELETE FROM schema")
        conn.execute("INSERT INTO schema VALUES (?)", (SCHEMA_VERSION,))
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
    conn.execute("COMMIT")
    return True


def _busy(exc: sqlite3.DatabaseError) -> bool:
    """SQLite's "database is locked" / "busy": another process is writing, the file is sound."""
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


def _run_names(exp_dirs: list[Path]) -> dict[str, str]:
    """run id -> experiment id of every entry of these experiment directories that may be a run
    (one listing each, no stat: a file among them is found out when read)."""
    on_disk: dict[str, str] = {}
    for exp_dir in exp_dirs:
        try:
            names = os.listdir(exp_dir)
        except OSError:
            continue
        for name in names:
            if not name.startswith(".") and name not in RESERVED_EXPERIMENT_DIRS:
                on_disk[name] = exp_dir.name
    return on_disk


def _order_of(start_time: Any, run_id: str) -> tuple[int, str]:
    """MLflow's default order as a sort key (search_grammar.sort_rows: start_time DESC, run_id ASC;
    a run without a start time last)."""
    return (-(start_time or 0), run_id)


def _order(run: IndexedRun) -> tuple[int, str]:
    return _order_of(run.info.get("start_time"), run.run_id)


READ_THREADS = 4  # files read at once when many runs come from a slow disk (see _read_runs)
_PROBE = 128  # runs read in this thread first, timed, before a pool is considered
_OUTSIDE_PYTHON = 2.5  # wall clock over user CPU time above which reading was mostly not Python


def _read_runs(
    todo: list[tuple[int, str, str, str, bool]],
    olds: dict[str, dict[tuple[str, str], tuple[str, str, str]]],
    now_ns: int,
) -> list[IndexedRun | None]:
    """read_run for each (slot, run_dir, run_id, exp_id, cached) in order; None where it has no
    readable meta.yaml (skipped, as MLflow does).

    Many runs (a store MLflow wrote, or rsynced in) are read in this thread while the reading is
    mostly Python: their files are in the page cache, and threads would only hand the GIL to each
    other at every open and read (10,000 such runs: 8 threads 27 s, one 14 s, on the 2-core VM).
    When the first _PROBE runs took over _OUTSIDE_PYTHON times their user CPU time — the time went
    to the kernel reading a disk, or to waiting on one or on a network file system, which threads
    overlap — the rest are read by a bounded pool (page cache dropped: 4 threads 29 s, one 38-44 s).
    """

    def one(item: tuple[int, str, str, str, bool]) -> IndexedRun | None:
        _slot, run_dir, run_id, exp_id, _cached = item
        try:
            return read_run(run_dir, run_id, exp_id, olds.get(run_id, {}), now_ns)
        except MalformedMetricError:
            raise  # MLflow cannot read it either: say so, never leave the run out
        except (StoreError, FileNotFoundError, NotADirectoryError):
            return None

    wall, user = time.perf_counter(), _user_seconds()
    first = [one(item) for item in todo[:_PROBE]]
    rest = todo[_PROBE:]
    if not rest or time.perf_counter() - wall <= _OUTSIDE_PYTHON * (_user_seconds() - user):
        return first + [one(item) for item in rest]
    # import budget: threads only for a search that reads many runs from a slow disk
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="mlkit-index") as pool:
        return first + list(pool.map(one, rest))


def _user_seconds() -> float:
    """This thread's user CPU time: the part of reading that holds the GIL (Linux; elsewhere the
    thread's whole CPU time)."""
    if hasattr(resource, "RUSAGE_THREAD"):
        return resource.getrusage(resource.RUSAGE_THREAD).ru_utime
    return time.thread_time()


_CLAIMED = JOURNAL_FILE + "."


def _older_than_a_minute(path: str) -> bool:
    try:
        return time.time() - os.stat(path).st_mtime > 60
    except OSError:
        return False


def _read_own(path: str) -> bytes | None:
    """A journal's bytes when it is a regular file we own (never a link, never another user's:
    theirs are not trusted, and their runs are read from the files); None otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            return None
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    except OSError:
        return None
    finally:
        os.close(fd)


def _is_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False
