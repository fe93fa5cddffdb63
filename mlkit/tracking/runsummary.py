"""What the search cache knows of one run, read from its files, and the journal through which the
store's writers keep the cache current without opening it.

`read_run` reads a run (or some kinds of its keys) into an `IndexedRun`: its attributes, values and
the stat signature of every file and directory they came from (see mlkit.tracking.index).

The journal, `<root>/<experiment_id>/.mlkit-index.journal` (a hidden file beside the runs, which
MLflow and mlkit never take for a run): whenever mlkit writes a run's summary (created, params
or tags set, status changed, ended) the store appends one JSON line with what the cache would hold
for that run (`record`); the next search folds the journal into the SQLite cache
(`RunIndex.ingest`), so the first search of a store mlkit wrote finds its runs already indexed. A
writer appends one line with one `write` (O_APPEND) and never opens SQLite: `mlkit run` keeps
sqlite3 out of its path. Metric points are not journalled; a run's metrics are, when it ends.

Signatures in the journal are "trusted" (not marked racy, as a reader marks what changed less than
a second ago): the writer has just replaced the file itself, atomically, so any later change gives
it a new inode, or a larger size for an appended metric file. Directory signatures are trusted only
once the run has ended (until then another process may add a key in the same clock tick). The
journal is only a hint: every entry is checked against the files like any cached value, a torn or
unreadable line is skipped, and a journal that cannot be written is simply not written.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlkit.errors import MalformedMetricError
from mlkit.tracking import files
from mlkit.tracking.entities import INT_TO_STATUS

JOURNAL_FILE = ".mlkit-index.journal"
JOURNAL_FOLD_BYTES = 2 << 20  # a writer folds a journal this large into the cache itself (~500 runs)
RACY_NS = 1_000_000_000
# The last bytes read of a metric file, kept with its offset: a file rewritten in place is told
# from one appended to.
TAIL_BYTES = 16
KIND_DIRS = {"metric": "metrics", "param": "params", "tag": "tags"}
KINDS = ("metric", "param", "tag")
TERMINAL = ("FINISHED", "FAILED", "KILLED")


def file_sig(path: str) -> str:
    """mtime.ctime.size.inode of a path, '' when it does not exist."""
    try:
        st = os.stat(path)
    except OSError:
        return ""
    return f"{st.st_mtime_ns}.{st.st_ctime_ns}.{st.st_size}.{st.st_ino}"


def stored_sig(path: str, now_ns: int | None) -> str:
    """The signature to store: 'racy' (never matches) when the path changed within the last second;
    `now_ns` None: the writer that just replaced the file records it (see `record`)."""
    try:
        st = os.stat(path)
    except OSError:
        return ""
    if now_ns is not None and now_ns - max(st.st_ctime_ns, st.st_mtime_ns) < RACY_NS:
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


def _walk(top: str, now_ns: int | None) -> tuple[str, list[str]]:
    """(signature of top and its subdirs, every file key under top), stat taken before listing."""
    sigs = [stored_sig(top, now_ns)]
    keys: list[str] = []
    base = len(top) + 1
    stack = [top]
    while stack:
        current = stack.pop()
        if current != top:
            sigs.append(f"{current[base:]}={stored_sig(current, now_ns)}")
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
    meta = files.read_run_meta(Path(run_dir) / "meta.yaml")
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
    path: str, key: str, old: tuple[str, str, str] | None, now_ns: int | None
) -> tuple[str, str, str] | None:
    """(latest value repr, sig, extra json [step, ts, count, offset, ino, tail]) read on from the
    last offset. `tail` is the last bytes read (latin-1): a file rewritten in place rather than
    appended to no longer has them before the offset, and is read again whole."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    start, count, best, tail = 0, 0, None, b""
    if old is not None and old[2]:
        step, ts, old_count, offset, ino, *rest = json.loads(old[2])
        # Read on only from an offset that can be right (a journal line may say anything), with
        # the tail read before it (a tail that is not one only costs a whole read); an entry
        # without a tail is from before there were tails: read whole.
        if rest and isinstance(rest[0], str):
            tail = rest[0].encode("latin-1", "replace")
        if tail and ino == st.st_ino and len(tail) <= offset <= st.st_size:
            start, count = offset, old_count
            best = (step, ts, float(old[0])) if old_count else None
        else:
            tail = b""
    try:
        with open(path, "rb") as fh:  # only up to the size stat'ed: later appends are seen next time
            fh.seek(start - len(tail))
            data = fh.read(max(0, st.st_size - start + len(tail)))
    except OSError:
        return None
    if data[: len(tail)] != tail:  # not what was read there before: rewritten, read it whole
        return _read_metric(path, key, None, now_ns)
    data = data[len(tail) :]
    try:
        metrics, consumed = files.parse_metric_lines(data, key, path)
    except MalformedMetricError:
        if start:  # read on from an offset: parse it whole, for the line number in the file
            with open(path, "rb") as fh:
                files.parse_metric_lines(fh.read(), key, path)
        raise
    for m in metrics:
        cand = (m.step, m.timestamp, m.value)
        if best is None or cand > best:
            best = cand
    count += len(metrics)
    tail = (tail + data[:consumed])[-TAIL_BYTES:]
    recent = now_ns is not None and now_ns - max(st.st_mtime_ns, st.st_ctime_ns) < RACY_NS
    sig = "racy" if recent else f"{st.st_mtime_ns}.{st.st_ctime_ns}.{st.st_size}.{st.st_ino}"
    step, ts, value = best if best is not None else (0, 0, None)
    extra = json.dumps([step, ts, count, start + consumed, st.st_ino, tail.decode("latin-1")])
    return ("" if value is None else repr(value)), sig, extra


def read_run(
    run_dir: str,
    run_id: str,
    exp_id: str,
    old: dict[tuple[str, str], tuple[str, str, str]],
    now_ns: int | None,
    kinds: tuple[str, ...] = KINDS,
    dir_now_ns: int | None = -1,
    info: dict[str, Any] | None = None,
) -> IndexedRun:
    """Read a run from its files (metrics incrementally, from `old`): its meta.yaml and the keys of
    `kinds` (all by default). `now_ns` None trusts fresh file signatures; `dir_now_ns` (default: as
    `now_ns`) is the same for the kind directories; `info`: read_meta's answer, when the caller has
    it (read after the signature was taken)."""
    dir_now = now_ns if dir_now_ns == -1 else dir_now_ns
    meta_sig = stored_sig(f"{run_dir}/meta.yaml", now_ns)
    info = read_meta(run_dir) if info is None else info
    run = IndexedRun(run_id, exp_id, run_dir, info, {"meta": meta_sig}, {}, kinds == KINDS)
    for kind in kinds:
        top = f"{run_dir}/{KIND_DIRS[kind]}"
        run.sigs[kind], keys = _walk(top, dir_now)
        for key in keys:
            path = f"{top}/{key}"
            if kind == "metric":
                entry = _read_metric(path, key, old.get((kind, key)), now_ns)
            else:
                sig = stored_sig(path, now_ns)
                try:
                    entry = (files.read_value(path), sig, "")  # a str path: no pathlib per file
                except OSError:
                    entry = None
            if entry is not None:
                run.values[(kind, key)] = entry
    if not info["run_name"] and "tag" in kinds:
        info["run_name"] = run.values.get(("tag", "mlflow.runName"), ("",))[0]
    return run


def entry_of(run: IndexedRun) -> dict[str, Any]:
    """The journal line for a run read by `read_run` (JSON-ready)."""
    kinds = [k for k in KINDS if k in run.sigs]
    return {
        "v": 1,
        "run": run.run_id,
        "exp": run.exp_id,
        "kinds": kinds,
        "info": run.info,
        "sigs": run.sigs,
        "values": [[kind, key, *v] for (kind, key), v in run.values.items()],
    }


def record(run_dir: Path, kinds: tuple[str, ...] = KINDS) -> bool:
    """Journal what the cache should know of the run in `run_dir` after mlkit changed it: its
    meta.yaml and the keys of `kinds` (all of them once the run has ended). True when the journal
    of its experiment has grown past JOURNAL_FOLD_BYTES (the caller folds it into the cache). Never raises: the
    cache is optional, and a store that cannot take the line is searched from its files."""
    try:
        path = str(run_dir)
        meta_sig = stored_sig(f"{path}/meta.yaml", None)  # taken before reading: a later change shows
        info = read_meta(path)
        ended = info["status"] in TERMINAL
        if ended:
            kinds = KINDS
        dir_now = None if ended else time.time_ns()
        run = read_run(path, run_dir.name, run_dir.parent.name, {}, None, kinds, dir_now, info)
        run.sigs["meta"] = meta_sig
        line = (json.dumps(entry_of(run), separators=(",", ":")) + "\n").encode("utf-8")
        fd = os.open(
            run_dir.parent / JOURNAL_FILE,
            os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o666,
        )
        try:
            os.write(fd, line)  # one write: concurrent writers' lines never interleave
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
    except Exception:  # noqa: BLE001  # the journal is a hint; the files are the truth
        return False
    return size > JOURNAL_FOLD_BYTES


def parse_journal(data: bytes) -> dict[str, dict[str, Any]]:
    """The journal's entries, the later ones merged over the earlier, by run id; bad lines skipped.

    Read from the end: a run's lines before its last whole entry (all kinds) are never decoded,
    so a run journalled four times costs one JSON decode."""
    chains: dict[str, list[dict[str, Any]]] = {}  # run id -> its entries, newest first
    done: set[str] = set()  # runs whose newest whole entry has been found
    for line in reversed(data.split(b"\n")):
        if not line or (line.startswith(_PREFIX) and line[_AT : _AT + 32].decode("ascii", "replace") in done):
            continue
        try:
            entry = json.loads(line)
            if not _well_formed(entry):
                continue
            run_id = entry["run"]
        except (ValueError, KeyError, TypeError, IndexError, RecursionError):
            continue  # a torn line (a writer died mid-write) or something that is not ours
        if run_id in done:
            continue
        chains.setdefault(run_id, []).append(entry)
        if set(entry["kinds"]) == set(KINDS):
            done.add(run_id)
    out: dict[str, dict[str, Any]] = {}
    for run_id, chain in chains.items():
        merged = chain[-1]
        for entry in reversed(chain[:-1]):  # a partial entry: new meta and its own kinds
            kept = [v for v in merged["values"] if v[0] not in entry["kinds"]]
            kinds = sorted(set(merged["kinds"]) | set(entry["kinds"]))
            sigs = {**merged["sigs"], **entry["sigs"]}
            merged = {**entry, "kinds": kinds, "sigs": sigs, "values": kept + entry["values"]}
        out[run_id] = merged
    return out


_PREFIX = b'{"v":1,"run":"'  # how record() starts a line (json.dumps keeps the dict's order)
_AT = len(_PREFIX)


_INFO_KEYS = ("run_id", "experiment_id", "run_name", "user_id", "status", "start_time", "end_time",
              "artifact_uri", "lifecycle_stage")  # fmt: skip


def _name(value: Any) -> bool:
    return isinstance(value, str) and value not in ("", ".", "..") and "/" not in value and "\0" not in value


def _well_formed(entry: Any) -> bool:
    """True when a decoded journal line has exactly the shape `entry_of` writes: every kind one of
    KIND_DIRS (kinds are pasted into SQL as column names), every value of the type read_run
    makes (a metric's value parses as a float, its extra is [step, ts, count, offset, ino, tail])."""
    if not isinstance(entry, dict) or entry.get("v") != 1:
        return False
    kinds, info, sigs, values = entry.get("kinds"), entry.get("info"), entry.get("sigs"), entry.get("values")
    if not (_name(entry.get("run")) and _name(entry.get("exp")) and isinstance(kinds, list)):
        return False
    if not all(isinstance(k, str) and k in KIND_DIRS for k in kinds) or len(set(kinds)) != len(kinds):
        return False
    if not isinstance(info, dict) or not all(k in info for k in _INFO_KEYS):
        return False
    if not all(v is None or isinstance(v, (str, int, float)) for v in info.values()):
        return False
    if not isinstance(sigs, dict) or not all(isinstance(v, str) for v in sigs.values()):
        return False
    if not set(sigs) <= {"meta", *KINDS} or "meta" not in sigs or not all(k in sigs for k in kinds):
        return False
    if not isinstance(values, list):
        return False
    for v in values:
        if not (isinstance(v, list) and len(v) == 5 and all(isinstance(x, str) for x in v) and v[0] in kinds):
            return False
        if v[0] == "metric" and not _metric_ok(v[2], v[4]):
            return False
    return True


def _metric_ok(value: str, extra_json: str) -> bool:
    """A metric's cached value parses as a float, its extra is [step, ts, count, offset, ino, tail]
    (entries written before the tail have five: their file is read whole once)."""
    if value != "":
        float(value)  # ValueError: not ours (the caller skips the line)
    if extra_json == "":
        return True
    extra = json.loads(extra_json)
    if not (isinstance(extra, list) and len(extra) in (5, 6)):
        return False
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in extra[:5]):
        return False
    if len(extra) == 6 and not (isinstance(extra[5], str) and len(extra[5]) <= TAIL_BYTES):
        return False
    return value != "" or extra[2] == 0  # a count of points needs a value
