"""Which GPUs a run gets: a pure function of a probe snapshot, the request and the live leases.

`GpuRequest.parse("2", min_free_memory=...)` validates `--gpus` and its filters; `select(report,
request, leased)` picks without side effects, so the policy is testable on any snapshot. The lease
ledger (`mlkit.gpu.ledger.reserve_gpus`) calls it under its file lock.

Policy (docs/gpus.md):
- A unit is a whole GPU, or one MIG instance of a GPU in MIG mode (the MIG-mode parent itself is
  never handed out). MIG instances are only picked for single-GPU requests: CUDA shows a process
  at most one MIG device.
- Never: lost GPUs, GPUs leased by another mlkit run, GPUs running a process that may be an mlkit
  run's and that no live lease accounts for (`GpuInfo.not_free`: a ledger that lost a lease).
- Filters: `--min-free-memory` (free >= X), `--max-gpu-util` (util <= X %; unknown passes, as on
  MIG), `--exclude-busy` (no process that is not an mlkit run's).
- Preference, least loaded first: fewest processes, most free memory, lowest utilisation, then
  NVML index (PCI order) — stable for equal GPUs.
- `auto` = one GPU (`count` of them for a multi-rank launch) that passes the filters and has no
  foreign processes, else the CPU with a notice; it never waits.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from mlkit.errors import UsageError
from mlkit.units import format_bytes, parse_memory

if TYPE_CHECKING:  # annotations only: `--gpus none` never loads the probe
    from mlkit.gpu.devices import GpuInfo, GpuReport

_UUID_RE = re.compile(r"^(GPU|MIG)-[0-9a-fA-F-]+(/\d+/\d+)?$")


@dataclass(frozen=True)
class GpuRequest:
    """What `--gpus` and its filter flags ask for."""

    kind: str  # "auto" | "none" | "all" | "count" | "list"
    count: int = 0  # for "count"; for "auto", how many (0 means 1: a multi-rank launch asks for more)
    ids: tuple[str, ...] = ()  # for "list": NVML indices ("0") and UUIDs or unique UUID prefixes
    min_free_memory: int | None = None  # bytes
    max_utilization: float | None = None  # percent
    exclude_busy: bool = False
    spec: str = "auto"

    @classmethod
    def parse(
        cls,
        spec: str = "auto",
        *,
        min_free_memory: int | str | None = None,
        max_utilization: float | None = None,
        exclude_busy: bool = False,
    ) -> GpuRequest:
        """`N`, `0,2` (indices: a list, or one index with a trailing comma), `<uuid>,...`, `all`,
        `none`, `auto`. A bare number is a count: `--gpus 0` means no GPU."""
        text = (spec or "auto").strip()
        if isinstance(min_free_memory, str):
            min_free_memory = parse_memory(min_free_memory)
        if min_free_memory is not None and min_free_memory < 0:
            raise UsageError(f"--min-free-memory {min_free_memory}: cannot be negative", hint="e.g. 20GiB")
        if max_utilization is not None and not 0 <= max_utilization <= 100:
            raise UsageError(
                f"--max-gpu-util {max_utilization}: must be a percentage from 0 to 100",
                hint="e.g. --max-gpu-util 10 for GPUs at most 10 % busy",
            )
        # The filters every kind shares; each return below fills in the kind (and count or ids).
        none = cls(
            kind="none",
            min_free_memory=min_free_memory,
            max_utilization=max_utilization,
            exclude_busy=exclude_busy,
            spec=text,
        )
        lowered = text.lower()
        if lowered in ("auto", "none", "all"):
            return replace(none, kind=lowered)
        if lowered.startswith("device="):  # docker's spelling
            text = text[len("device=") :]
            if "," not in text:
                text += ","
        if text.isdigit():
            count = int(text)
            return replace(none, kind="count", count=count) if count else none
        ids = tuple(part.strip() for part in text.split(",") if part.strip())
        bad = [part for part in ids if not (part.isdigit() or _UUID_RE.match(part))]
        if not ids or bad:
            raise UsageError(
                f"--gpus {spec!r}: {', '.join(map(repr, bad)) or 'empty list'} is not a GPU count, index or UUID",
                hint="use a count (--gpus 2), indices (--gpus 0,2 or --gpus 1,), UUIDs (GPU-…/MIG-…), all, none or auto",
            )
        if len(set(ids)) != len(ids):
            raise UsageError(
                f"--gpus {spec!r}: a GPU is named twice",
                hint="CUDA hides every GPU when CUDA_VISIBLE_DEVICES repeats one; name each once",
            )
        return replace(none, kind="list", ids=ids)

    def describe(self) -> str:
        """ "1 GPU with ≥20.0 GiB free, ≤10% busy" for wait and error messages."""
        if self.kind == "count":
            what = f"{self.count} GPU{'s' if self.count != 1 else ''}"
        elif self.kind == "list":
            what = f"GPU{'s' if len(self.ids) != 1 else ''} {','.join(self.ids)}"
        elif self.kind == "all":
            what = "all GPUs"
        elif self.kind == "auto":
            n = self.count or 1
            what = f"{n} free GPU{'s' if n != 1 else ''}"
        else:
            what = "no GPU"
        filters = []
        if self.min_free_memory is not None:
            filters.append(f"≥{format_bytes(self.min_free_memory)} free")
        if self.max_utilization is not None:
            filters.append(f"≤{self.max_utilization:g}% busy")
        if self.exclude_busy:
            filters.append("no other processes")
        return what + (" with " + ", ".join(filters) if filters else "")


class Held(str):
    """The run id of a waiting run that a GPU is set aside for (in a leases map passed to `select`):
    runs that have waited longer are served first (mlkit.gpu.queue)."""


@dataclass(eq=False)
class Selection:
    """What `select` decided. `ok` with no GPUs is a CPU run (`notice` says why, for auto)."""

    ok: bool
    gpus: list[GpuInfo] = field(default_factory=list)
    notice: str | None = None
    # when not ok:
    fatal: bool = False  # waiting cannot help (no GPUs, too few, unknown ids)
    message: str | None = None  # one line: what was asked and why it cannot be had
    why: str | None = None  # the per-GPU reasons only ("GPU 0 leased by run ab12…, GPU 1 has 3 GiB free")
    hint: str | None = None


def select(report: GpuReport, request: GpuRequest, leased: Mapping[str, str] | Collection[str]) -> Selection:
    """Pick GPUs for `request` from `report`, skipping `leased` UUIDs (a uuid -> run id map, or a set)."""
    leases = dict(leased) if isinstance(leased, Mapping) else {uuid: "" for uuid in leased}
    if request.kind == "none":
        return Selection(ok=True)
    head = f"--gpus {request.spec}"
    if not report.gpus or all(gpu.lost for gpu in report.gpus):
        reason = report.reason or "NVML reports no GPUs"
        if request.kind == "auto":
            return Selection(ok=True, notice=f"no NVIDIA GPU ({reason}): running on CPU")
        return Selection(
            ok=False,
            fatal=True,
            message=f"{head}: no GPU on this machine: {reason}",
            why=reason,
            hint="run on the CPU with --gpus none (or --gpus auto, which falls back to the CPU)",
        )
    if request.kind == "list":
        return _select_listed(report, request, leases, head)

    count = (request.count or 1) if request.kind == "auto" else request.count
    exclude_busy = request.exclude_busy or request.kind == "auto"
    units = _units(report, single=(count == 1 and request.kind != "all"))
    if request.kind == "all":
        count = len(units)
        if not count:
            return _fatal(head, "no GPU that can be handed out whole (MIG-mode GPUs need a MIG UUID)", report)
    elif len(units) < count:
        if request.kind == "auto":
            return Selection(
                ok=True,
                notice=f"{len(units)} usable GPU{'s' if len(units) != 1 else ''} for {count} ranks: running on CPU",
            )
        return _fatal(
            head,
            f"this machine has {len(units)} usable GPU{'s' if len(units) != 1 else ''}, {count} asked for",
            report,
        )
    eligible, problems = [], []
    for unit in units:
        problem = why_not(unit, request, leases, exclude_busy=exclude_busy)
        if problem:
            problems.append(f"{unit.label} {problem}")
        else:
            eligible.append(unit)
    eligible.sort(key=preference)
    if request.kind == "all":
        if not problems:
            return Selection(ok=True, gpus=sorted(units, key=lambda u: u.index))
        return _busy(head, request, problems)
    if len(eligible) >= count:
        return Selection(ok=True, gpus=eligible[:count])
    if request.kind == "auto":
        what = "no free GPU" if count == 1 else f"{len(eligible)} of the {count} GPUs needed free"
        return Selection(ok=True, notice=f"{what} ({'; '.join(problems)}): running on CPU")
    return _busy(head, request, problems, have=len(eligible))


def _select_listed(report: GpuReport, request: GpuRequest, leases: dict[str, str], head: str) -> Selection:
    chosen = _named_units(report, request, head)
    if isinstance(chosen, Selection):
        return chosen
    problems = []
    for unit in chosen:
        problem = why_not(unit, request, leases, exclude_busy=request.exclude_busy)
        if problem:
            problems.append(f"{unit.label} {problem}")
    if problems:
        return _busy(head, request, problems)
    return Selection(ok=True, gpus=chosen)


def _named_units(report: GpuReport, request: GpuRequest, head: str) -> list[GpuInfo] | Selection:
    """The units a list request names (indices or UUID prefixes), or the fatal Selection saying
    why they cannot be had; UsageError for a request that can never be valid."""
    chosen: list[GpuInfo] = []
    units = report.by_uuid()
    for ident in request.ids:
        if ident.isdigit():
            match = [g for g in report.gpus if g.index == int(ident)]
        else:
            match = [u for uuid, u in units.items() if uuid.lower().startswith(ident.lower())]
        if not match:
            return _fatal(head, f"{ident}: no such GPU on this machine", report)
        if len(match) > 1:
            raise UsageError(
                f"{head}: {ident!r} matches {len(match)} GPUs",
                hint="give more of the UUID (`mlkit gpus` lists them)",
            )
        unit = match[0]
        if unit.mig_mode and not unit.is_mig_instance:
            names = ", ".join(m.uuid for m in unit.mig_instances) or "none configured"
            return _fatal(
                head, f"{unit.label} is in MIG mode; name one of its MIG instances ({names})", report
            )
        if unit.lost:
            return _fatal(head, f"{unit.label} is lost ({unit.error})", report)
        chosen.append(unit)
    if len(chosen) > 1 and any(u.is_mig_instance for u in chosen):
        raise UsageError(
            f"{head}: a MIG instance must be the run's only GPU",
            hint="CUDA shows a process one MIG device at most; run one MIG instance per run",
        )
    if len({u.uuid for u in chosen}) != len(chosen):
        raise UsageError(f"{head}: a GPU is named twice (by index and by UUID)", hint="name each GPU once")
    return chosen


def _units(report: GpuReport, *, single: bool) -> list[GpuInfo]:
    """What can be handed out: whole GPUs not in MIG mode; MIG instances too when one is asked for."""
    units = []
    for gpu in report.gpus:
        if gpu.lost:
            continue
        if gpu.mig_mode:
            if single:
                units.extend(gpu.mig_instances)
            continue
        units.append(gpu)
    return units


def why_not(
    unit: GpuInfo, request: GpuRequest, leases: Mapping[str, str], *, exclude_busy: bool
) -> str | None:
    """Why this unit cannot be given to the request now, or None when it can."""
    if unit.lost:
        return "is lost"
    for uuid in (unit.uuid, unit.parent_uuid):
        if uuid is not None and uuid in leases:
            run = leases[uuid]
            if isinstance(run, Held):
                return f"is held for run {run[:8]}…, which has waited longer"
            return f"leased by run {run[:8]}…" if run else "leased by another mlkit run"
    if unit.not_free:  # a process no live lease accounts for (NVML's list, devices._mark_leases)
        return f"is {unit.not_free}"
    if request.min_free_memory is not None:
        if unit.memory_free is None:
            return "has unknown free memory"
        if unit.memory_free < request.min_free_memory:
            return f"has {format_bytes(unit.memory_free)} free"
    if request.max_utilization is not None and unit.utilization_gpu is not None:
        if unit.utilization_gpu > request.max_utilization:
            return f"is {unit.utilization_gpu}% busy"
    if exclude_busy:
        foreign = [p for p in unit.processes if p.mlkit_run_id is None]
        if foreign:
            who = ", ".join(f"pid {p.pid}" + (f" ({p.user})" if p.user else "") for p in foreign[:3])
            return f"runs {len(foreign)} other process{'es' if len(foreign) != 1 else ''}: {who}"
    return None


def claimable(report: GpuReport, request: GpuRequest, leased: Mapping[str, str]) -> list[GpuInfo]:
    """The GPUs a request that cannot be met yet could use now, at most as many as it needs, best
    first: what the wait queue sets aside for it, so that later requests cannot keep taking them."""
    if request.kind in ("none", "auto"):
        return []
    if request.kind == "list":
        try:
            named = _named_units(report, request, f"--gpus {request.spec}")
        except UsageError:
            return []
        if isinstance(named, Selection):
            return []
        return [u for u in named if not why_not(u, request, leased, exclude_busy=request.exclude_busy)]
    single = request.kind == "count" and request.count == 1
    free = [
        u
        for u in _units(report, single=single)
        if not why_not(u, request, leased, exclude_busy=request.exclude_busy)
    ]
    free.sort(key=preference)
    return free if request.kind == "all" else free[: request.count]


def preference(unit: GpuInfo) -> tuple:
    """Least loaded first: fewest processes, most free memory, lowest utilisation, then PCI order."""
    return (
        len(unit.processes),
        -(unit.memory_free or 0),
        unit.utilization_gpu or 0,
        unit.index,
        unit.gpu_instance_id if unit.gpu_instance_id is not None else -1,
    )


def _fatal(head: str, why: str, report: GpuReport) -> Selection:
    return Selection(
        ok=False,
        fatal=True,
        message=f"{head}: {why}",
        why=why,
        hint="`mlkit gpus` lists this machine's GPUs; ask for fewer, or --gpus auto/none for the CPU",
    )


def _busy(head: str, request: GpuRequest, problems: list[str], have: int | None = None) -> Selection:
    why = ", ".join(problems)
    return Selection(
        ok=False,
        message=f"{head}: need {request.describe()}, {'none' if not have else have} available now: {why}",
        why=why,
        hint="wait for them with --wait DURATION (e.g. --wait 2h), or relax --min-free-memory/--max-gpu-util/--exclude-busy",
    )


def cuda_env(gpus: list[GpuInfo]) -> dict[str, str]:
    """The child's CUDA variables: UUIDs (MIG UUIDs for MIG instances) in PCI order semantics."""
    return {"CUDA_VISIBLE_DEVICES": ",".join(g.uuid for g in gpus), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
