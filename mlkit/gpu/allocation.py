"""GPUs inside a scheduler's allocation: the job's, and only the job's.

Inside a Slurm job (SLURM_JOB_ID set) the GPUs this process may use are the ones Slurm gave it,
named by the CUDA_VISIBLE_DEVICES Slurm set (else SLURM_STEP_GPUS / SLURM_JOB_GPUS); a job Slurm
gave no GPUs (none of its GPU variables set) has none, whatever CUDA_VISIBLE_DEVICES it inherited. mlkit's probe,
selection, system metrics and energy summary then see only those, and the host-wide lease ledger
is not used for them: Slurm is the arbiter, and two jobs never get the same GPU. Slurm's list is
trusted even where NVML is absent or sees other numbering (a stand-in GpuInfo per entry).

Outside a Slurm job, an inherited CUDA_VISIBLE_DEVICES (set by the user's shell, another scheduler,
or a parent mlkit run for its child) also narrows what mlkit sees and hands out — the probe, the
selection and so the lease — to the GPUs it names, as CUDA itself would; but the host ledger still
arbitrates them (nobody else vouches that they are free), and an entry NVML does not see is
dropped, not trusted.
"""

from __future__ import annotations

import dataclasses
import os

from mlkit.gpu.devices import GpuInfo, GpuReport

STAND_IN_NAME = "GPU allocated by Slurm"
# What Slurm sets beside CUDA_VISIBLE_DEVICES when it gives a job (or step) GPUs. sbatch exports the
# submitting shell's environment, so a CUDA_VISIBLE_DEVICES without any of these is the shell's,
# not the job's: those GPUs belong to whoever Slurm gave them to.
SLURM_GPU_VARIABLES = ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "GPU_DEVICE_ORDINAL", "SLURM_GPUS_ON_NODE")


def allocated() -> list[str] | None:
    """The allocation's GPU entries (indices or UUIDs, Slurm's order); None outside an allocation,
    [] for an allocation without GPUs."""
    if not os.environ.get("SLURM_JOB_ID"):
        return None
    if not any(os.environ.get(name) for name in SLURM_GPU_VARIABLES):
        return []  # no GPUs from Slurm: a CUDA_VISIBLE_DEVICES here came with the submitter's shell
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        value = os.environ.get("SLURM_STEP_GPUS") or os.environ.get("SLURM_JOB_GPUS") or ""
    return [entry.strip() for entry in value.split(",") if entry.strip() and entry.strip() != "NoDevFiles"]


def scope(report: GpuReport, entries: list[str]) -> GpuReport:
    """`report` cut down to the allocation's GPUs, in Slurm's order. A GPU NVML sees is matched by
    its index or UUID; an entry NVML does not see becomes a stand-in (Slurm's word is trusted)."""
    by_key: dict[str, GpuInfo] = {}
    for gpu in report.gpus:
        by_key[str(gpu.index)] = gpu
        by_key[gpu.uuid] = gpu
        for mig in gpu.mig_instances:
            by_key[mig.uuid] = mig
    gpus: list[GpuInfo] = []
    for i, entry in enumerate(entries):
        found = by_key.get(entry)
        if found is None:
            index = int(entry) if entry.isdigit() else i
            found = GpuInfo(
                index=index, uuid=entry if not entry.isdigit() else f"slurm-gpu-{entry}", name=STAND_IN_NAME
            )
        gpus.append(found)
    reason = None if gpus else "the Slurm job was given no GPUs (submit it with --gpus N)"
    return GpuReport(
        gpus=gpus,
        driver_version=report.driver_version,
        cuda_version=report.cuda_version,
        reason=reason,
    )


def visible_devices(gpus: list[GpuInfo], entries: list[str]) -> str:
    """CUDA_VISIBLE_DEVICES for the chosen GPUs, in the form Slurm used (its index or UUID)."""
    chosen = []
    for gpu in gpus:
        if gpu.name == STAND_IN_NAME:
            chosen.append(gpu.uuid.removeprefix("slurm-gpu-"))
        elif str(gpu.index) in entries:
            chosen.append(str(gpu.index))
        else:
            chosen.append(gpu.uuid)
    return ",".join(chosen)


def inherited() -> list[str] | None:
    """Outside a Slurm job, the entries of an inherited CUDA_VISIBLE_DEVICES (indices or UUIDs, in
    order, up to the first invalid one as CUDA reads it: `-1` hides the rest); None when unset."""
    if os.environ.get("SLURM_JOB_ID"):
        return None
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    entries: list[str] = []
    for entry in (e.strip() for e in value.split(",")):
        if not entry or entry.startswith("-") or entry == "NoDevFiles":
            break
        entries.append(entry)
    return entries


def narrow(report: GpuReport, entries: list[str]) -> GpuReport:
    """`report` with only the GPUs an inherited CUDA_VISIBLE_DEVICES names (by index, UUID, or a
    unique UUID prefix as CUDA accepts), in its order; the host ledger's view stays as it was."""
    gpus: list[GpuInfo] = []
    for entry in entries:
        matches = [
            unit
            for gpu in report.gpus
            for unit in (gpu, *gpu.mig_instances)
            if (entry.isdigit() and unit is gpu and str(gpu.index) == entry)
            or (not entry.isdigit() and unit.uuid.startswith(entry))
        ]
        if len(matches) != 1 or matches[0] in gpus:
            break  # as CUDA does: the list ends at the first entry that names no one GPU, or repeats
        gpus.append(matches[0])
    reason = report.reason
    if not gpus and report.gpus:
        reason = (
            f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')!r} leaves this process no GPU"
        )
    return dataclasses.replace(report, gpus=gpus, reason=reason)
