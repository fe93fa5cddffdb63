"""Nothing in the GPU ledger is trusted: every record is checked, and a lease counts only while a
process of its run provably lives.

The ledger is a file every user of the box can write, so it is read as a claim, not a fact:

- `parse(raw)` turns the ledger's text into leases and waiters, dropping each record that is not
  well-formed (types, ranges, a GPU UUID's shape) with a one-line warning naming it. Text that is
  not a ledger at all gives no records and a warning; the leases are then rebuilt from what can be
  proven (`proven_leases`), never read as "every GPU is free".
- `judge(record, proof)` says whether a lease or waiter is honoured: LIVE while its supervisor is
  the mlkit process that took it (same pid *and* start time, and it holds the ledger's
  `gpu-leases.held` lock or runs `mlkit`), or while any process of its run lives (the entry point
  recorded in the lease, its process group, or any process whose environment carries the run's
  MLKIT_RUN_ID). A record naming another host is FOREIGN (the state dir is this host's own); one
  whose pid lives but is not that mlkit process (pid 1, a reused pid, another program) is an
  IMPOSTOR. Neither is honoured; `mlkit gpus` shows them and `mlkit gpus --release` clears them.
- `proven_leases(...)` finds live run processes (MLKIT_RUN_ID + CUDA_VISIBLE_DEVICES=<uuids> in
  their environment, readable as root or as their user; only runs of this state dir) so a lost or
  emptied ledger still knows which GPUs are in use.

Warnings go to the "mlkit.gpu" logger (stderr when nothing configured logging), each once per
process.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, overload

from mlkit import procid, settings
from mlkit.gpu.records import Lease, Waiter

LIVE, DEAD, FOREIGN, IMPOSTOR = "live", "dead", "foreign", "impostor"
HELD_FILE = "gpu-leases.held"  # every process holding a lease or waiting keeps a shared flock on it
RUN_ID_ENV = "MLKIT_RUN_ID"
PID_MAX = 1 << 22  # the kernel's ceiling for pid_max
_MAX_RECORDS = 4096
_UUID_RE = re.compile(r"^(GPU|MIG)-[0-9a-fA-F-]{1,80}(/\d{1,4}/\d{1,4})?$")
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_ROLE_RE = re.compile(r"^[a-z]{1,16}$")  # a lease's role ("serving")
_REQUEST_KINDS = ("auto", "none", "all", "count", "list")
_warned: set[str] = set()
_R = TypeVar("_R")


def warn(message: str) -> None:
    """One line on the "mlkit.gpu" logger (stderr by default), once per process."""
    if message in _warned:
        return
    _warned.add(message)
    import logging  # import budget: `mlkit run` loads logging only to warn

    logging.getLogger("mlkit.gpu").warning("mlkit: %s", message)


def is_gpu_uuid(value: object) -> bool:
    return isinstance(value, str) and bool(_UUID_RE.match(value))


# ----------------------------------------------------------------------------- parsing
class _Bad(ValueError):
    """A record field that is not what the ledger holds."""


# Each reader returns the field's type, or also None when `optional=True` (the overloads say so).
@overload
def _int(item: dict[str, Any], key: str, lo: int, hi: int) -> int: ...
@overload
def _int(item: dict[str, Any], key: str, lo: int, hi: int, *, optional: bool) -> int | None: ...
def _int(item: dict[str, Any], key: str, lo: int, hi: int, *, optional: bool = False) -> int | None:
    value = item.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise _Bad(f"{key!r} is {_show(value)}, not a whole number from {lo} to {hi}")
    return value


@overload
def _time(item: dict[str, Any], key: str) -> float: ...
@overload
def _time(item: dict[str, Any], key: str, *, optional: bool) -> float | None: ...
def _time(item: dict[str, Any], key: str, *, optional: bool = False) -> float | None:
    value = item.get(key)
    if value is None and optional:
        return None
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or not 0 < value <= time.time() + 86400
    ):
        raise _Bad(f"{key!r} is {_show(value)}, not a time (epoch seconds)")
    return float(value)


@overload
def _str(item: dict[str, Any], key: str, pattern: re.Pattern[str] | None = None) -> str: ...
@overload
def _str(
    item: dict[str, Any], key: str, pattern: re.Pattern[str] | None = None, *, optional: bool
) -> str | None: ...
def _str(
    item: dict[str, Any], key: str, pattern: re.Pattern[str] | None = None, *, optional: bool = False
) -> str | None:
    value = item.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 255 or (pattern and not pattern.match(value)):
        raise _Bad(f"{key!r} is {_show(value)}, not a valid {key}")
    return value


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _procs(item: dict[str, Any]) -> list[list[float]]:
    value = item.get("procs", [])
    if not isinstance(value, list) or len(value) > 64:
        raise _Bad(f"'procs' is {_show(value)}, not a list of [pid, start time]")
    procs: list[list[float]] = []
    for entry in value:
        if not isinstance(entry, list) or len(entry) != 2:
            raise _Bad(f"'procs' holds {_show(entry)}, not [pid, start time]")
        pair = {"pid": entry[0], "start": entry[1]}
        procs.append([_int(pair, "pid", 1, PID_MAX), _time(pair, "start")])
    return procs


def _lease(item: Any) -> Lease:
    if not isinstance(item, dict):
        raise _Bad(f"is {_show(item)}, not a record")
    return Lease(
        uuid=_str(item, "uuid", _UUID_RE),
        run_id=_str(item, "run_id", _RUN_ID_RE),
        pid=_int(item, "pid", 1, PID_MAX),
        pid_start=_time(item, "pid_start"),
        host=_str(item, "host"),
        since=_time(item, "since"),
        user=_str(item, "user", optional=True),
        uid=_int(item, "uid", 0, 2**32 - 1, optional=True),
        procs=_procs(item),
        pgid=_int(item, "pgid", 2, PID_MAX, optional=True),
        role=_str(item, "role", _ROLE_RE, optional=True),
    )


def _waiter(item: Any) -> Waiter:
    if not isinstance(item, dict):
        raise _Bad(f"is {_show(item)}, not a record")
    waiter = Waiter(
        run_id=_str(item, "run_id", _RUN_ID_RE),
        pid=_int(item, "pid", 1, PID_MAX),
        pid_start=_time(item, "pid_start"),
        host=_str(item, "host"),
        since=_time(item, "since"),
        request=_request(item.get("request")),
        user=_str(item, "user", optional=True),
        uid=_int(item, "uid", 0, 2**32 - 1, optional=True),
    )
    return waiter


def _request(value: Any) -> dict[str, Any]:
    """A waiter's GpuRequest fields, checked (a request that cannot be built is a bad record)."""
    if not isinstance(value, dict):
        raise _Bad(f"'request' is {_show(value)}, not a GPU request")
    kind = value.get("kind")
    ids = value.get("ids") or []
    checks = [
        kind in _REQUEST_KINDS,
        isinstance(value.get("count", 0), int) and not isinstance(value.get("count", 0), bool),
        0 <= (value.get("count", 0) if isinstance(value.get("count", 0), int) else -1) <= 1024,
        isinstance(ids, (list, tuple)) and len(ids) <= 64 and all(isinstance(i, str) for i in ids),
        value.get("min_free_memory") is None
        or (isinstance(value["min_free_memory"], int) and not isinstance(value["min_free_memory"], bool)),
        value.get("max_utilization") is None
        or (
            isinstance(value["max_utilization"], (int, float))
            and not isinstance(value["max_utilization"], bool)
        ),
        isinstance(value.get("exclude_busy", False), bool),
        isinstance(value.get("spec", ""), str),
        set(value) <= {"kind", "count", "ids", "min_free_memory", "max_utilization", "exclude_busy", "spec"},
    ]
    if not all(checks):
        raise _Bad(f"'request' is {_show(value)}, not a GPU request")
    return dict(value)


def parse(raw: str, where: str) -> tuple[list[Lease], list[Waiter], bool]:
    """(leases, waiters, readable) from the ledger's text. Each bad record is dropped with a
    warning naming it; `readable` is False when the text is not a ledger at all (also warned)."""
    if not raw.strip():
        return [], [], True
    try:
        data = json.loads(raw)
    except ValueError as exc:
        warn(f"GPU ledger {where} cannot be parsed ({exc}); rebuilt from the live mlkit processes")
        return [], [], False
    if not isinstance(data, dict) or not all(
        isinstance(data.get(key, []), list) for key in ("leases", "waiters")
    ):
        warn(f"GPU ledger {where} is not a ledger ({_show(data)}); rebuilt from the live mlkit processes")
        return [], [], False
    leases = _records(data.get("leases", []), _lease, "lease", where)
    waiters = _records(data.get("waiters", []), _waiter, "waiter", where)
    return leases, waiters, True


def _records(items: list[Any], build: Callable[[Any], _R], kind: str, where: str) -> list[_R]:
    """The well-formed records of one list of the ledger; each bad one is dropped with a warning."""
    out: list[_R] = []
    for i, item in enumerate(items[:_MAX_RECORDS]):
        try:
            out.append(build(item))
        except _Bad as exc:
            run = item.get("run_id") if isinstance(item, dict) else None
            named = f" (run {_show(run)})" if run is not None else ""
            warn(f"GPU ledger {where}: {kind} #{i + 1}{named} dropped: {exc}")
    if len(items) > _MAX_RECORDS:
        warn(f"GPU ledger {where}: {len(items) - _MAX_RECORDS} {kind}s past the first {_MAX_RECORDS} dropped")
    return out


# ----------------------------------------------------------------------------- liveness
@dataclass
class Proof:
    """What this host shows right now, gathered once per ledger read."""

    host: str
    held: set[int] = field(default_factory=set)  # pids holding a shared flock on HELD_FILE
    runs: dict[str, list[tuple[int, float, tuple[str, ...], int | None]]] = field(default_factory=dict)


def gather(dir_fd: int | None) -> Proof:
    """The host name, the holders of the ledger's `held` lock, and the live run processes."""

    return Proof(host=procid.hostname(), held=_held_pids(dir_fd), runs=run_processes())


def _held_pids(dir_fd: int | None) -> set[int]:
    if dir_fd is None:
        return set()
    try:
        st = os.stat(HELD_FILE, dir_fd=dir_fd, follow_symlinks=False)
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return set()
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = set()
    for line in lines:
        fields = line.split()
        if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK" or fields[5] != wanted:
            continue
        if fields[4].isdigit():
            pids.add(int(fields[4]))
    return pids


def run_processes() -> dict[str, list[tuple[int, float, tuple[str, ...], int | None]]]:
    """run id -> [(pid, start, GPU UUIDs in CUDA_VISIBLE_DEVICES, uid)] of every process whose
    environment this user may read and that carries MLKIT_RUN_ID (a process of an mlkit run)."""
    runs: dict[str, list[tuple[int, float, tuple[str, ...], int | None]]] = {}
    me = os.getpid()
    ours = str(settings.host_state_dir())
    for pid in procid.pids():
        if pid == me:
            continue
        env = procid.environ_of(pid)
        if not env:  # gone, or not ours to read
            continue
        run_id = env.get(RUN_ID_ENV)
        if not run_id or not _RUN_ID_RE.match(run_id):
            continue
        if _state_dir(env) != ours:  # a run of another ledger (MLKIT_STATE_DIR): not ours to count
            continue
        start = procid.start_time(pid)
        if start is None or start == procid.HIDDEN:
            continue
        uuids = tuple(u for u in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if is_gpu_uuid(u))
        runs.setdefault(run_id, []).append((pid, start, uuids, procid.uid_of(pid)))
    return runs


def _state_dir(env: dict[str, str]) -> str:
    """The state dir a process's mlkit would use (settings.host_state_dir for its environment)."""
    value = env.get("MLKIT_STATE_DIR")
    return str(Path(value).expanduser()) if value else "/tmp/mlkit-state"


def _looks_like_mlkit(pid: int, run_id: str, proof: Proof) -> bool:
    """Is live `pid` an mlkit process that may hold `run_id`'s lease?"""
    if pid == 1:
        return False
    if pid in proof.held:
        return True
    env = procid.environ_of(pid)
    if env is not None and env.get(RUN_ID_ENV) == run_id:
        return True
    args = procid.cmdline_of(pid) or []
    return any(os.path.basename(arg) == "mlkit" or arg.startswith("mlkit.") for arg in args[:4])


def _run_process(pid: int, record: Lease, proof: Proof) -> bool:
    """Is live `pid` a process of `record`'s run (its environment says so, or, where this user may
    not read it, it runs as the lease's user)?"""
    if pid == 1:
        return False
    env = procid.environ_of(pid)
    if env is not None:
        return env.get(RUN_ID_ENV) == record.run_id
    return record.uid is not None and procid.uid_of(pid) == record.uid


def judge(record: Lease | Waiter, proof: Proof) -> tuple[str, str]:
    """(LIVE | DEAD | FOREIGN | IMPOSTOR, why) for a lease or a waiter."""
    if record.host != proof.host:
        return FOREIGN, f"names host {record.host!r}, but the state dir is this host's ({proof.host!r}) own"
    owner = procid.ProcessRef(record.pid, record.pid_start)
    owner_same = procid.is_same(owner)
    if owner_same and _looks_like_mlkit(record.pid, record.run_id, proof):
        return LIVE, f"held by mlkit pid {record.pid}"
    if isinstance(record, Lease):  # a lease: any process of its run keeps it
        for pid, start in record.procs:
            if procid.is_same(procid.ProcessRef(int(pid), start)) and _run_process(int(pid), record, proof):
                return LIVE, f"its entry point pid {int(pid)} is alive"
        pgid = record.pgid
        if pgid and _group_alive(pgid, record, proof):
            return LIVE, f"its process group {pgid} is alive"
        if proof.runs.get(record.run_id):
            pid = proof.runs[record.run_id][0][0]
            return LIVE, f"its process {pid} is alive"
    if owner_same:
        return IMPOSTOR, (
            f"pid {record.pid} is alive but is not the mlkit process that took it ({_what(record.pid)})"
        )
    return DEAD, "no process of the run is left"


def _group_alive(pgid: int, record: Lease, proof: Proof) -> bool:
    """The entry point's process group still has members (they were the run's: a group's id is
    not reused while the group exists). The leader, if alive, must be the recorded entry point."""
    if pgid not in {int(pid) for pid, _ in record.procs}:
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    start = procid.start_time(pgid)
    if start is None:  # the leader is gone: does its group live on (zombies do not count)?
        return any(procid.group_of(pid) == pgid for pid in procid.pids())
    leader = next(s for pid, s in record.procs if int(pid) == pgid)
    return procid.is_same(procid.ProcessRef(pgid, leader)) and _run_process(pgid, record, proof)


def _what(pid: int) -> str:
    args = procid.cmdline_of(pid)
    if not args:
        return "a process mlkit cannot look at"
    text = " ".join(args)
    return text if len(text) <= 60 else text[:57] + "..."


def proven_leases(
    runs: dict[str, list[tuple[int, float, tuple[str, ...], int | None]]],
    leases: list[Lease],
    host: str,
) -> list[Lease]:
    """Leases for GPUs that live run processes use and no lease in `leases` accounts for."""
    covered = {(lease.uuid, lease.run_id) for lease in leases}
    found: list[Lease] = []
    for run_id, procs in runs.items():
        for pid, start, uuids, uid in procs:
            for uuid in uuids:
                if (uuid, run_id) in covered:
                    continue
                covered.add((uuid, run_id))
                user = procid.user_name(uid) if uid is not None else None
                found.append(Lease(uuid, run_id, pid, start, host, start, user, uid, [[pid, start]], None))
    return found
