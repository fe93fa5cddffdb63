"""The Slurm client commands, run through mlkit.proc (argv lists, a timeout on each).

Each raises `SlurmUnavailableError` (exit 68) when the command is not installed or the controller
cannot be reached, so callers can tell "Slurm said no" from "there is no Slurm to ask".
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence

from mlkit.errors import LaunchError, MlkitError, SlurmUnavailableError, UsageError

DEFAULT_QUERY_TIMEOUT = 5.0  # squeue/sacct: read commands stay fast (MLKIT_SLURM_TIMEOUT)
SUBMIT_TIMEOUT = 60.0
_UNREACHABLE = (
    "Unable to contact slurm controller",
    "Connection refused",
    "Socket timed out",
    "Zero Bytes were transmitted",
    "Could not establish a configuration source",
    "Unable to establish Slurm configuration",
    "Invalid authentication credential",
    "Munge encode failed",
    "slurm_persist_conn_open",
)
# squeue -O: raw job id, array job id, array task id ("N/A"), state, reason, nodes, wait status
SQUEUE_FIELDS = "JobID:|,ArrayJobID:|,ArrayTaskID:|,State:|,Reason:|,NodeList:|,exit_code:|"
SACCT_FIELDS = "JobID,JobIDRaw,State,ExitCode,NodeList"
ACCOUNTING_DISABLED = "accounting storage is disabled"


def have(command: str = "sbatch") -> bool:
    return shutil.which(command) is not None


def query_timeout() -> float:
    """MLKIT_SLURM_TIMEOUT (`5`, `5s`, `1m`) or 5 s; read when Slurm is asked, never at import."""
    text = os.environ.get("MLKIT_SLURM_TIMEOUT", "").strip()
    if not text:
        return DEFAULT_QUERY_TIMEOUT
    # import budget: units loads only when the variable is set
    from mlkit.units import parse_duration

    seconds = parse_duration(text, flag="MLKIT_SLURM_TIMEOUT")
    if not 0 < seconds < float("inf"):
        raise UsageError(
            f"MLKIT_SLURM_TIMEOUT {text!r}: give a wait longer than 0", hint="e.g. MLKIT_SLURM_TIMEOUT=10s"
        )
    return seconds


def slurm(argv: Sequence[str], *, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """Run one Slurm client command; SlurmUnavailableError when there is no Slurm to ask."""
    if timeout is None:
        timeout = query_timeout()
    exe = argv[0]
    if not have(exe):
        raise SlurmUnavailableError(
            f"{exe}: not found: the Slurm client is not installed on this host",
            hint="run from a cluster login node, or install the client (Debian: apt-get install slurm-client)",
        )
    # import budget: proc loads only when Slurm is asked
    from mlkit import proc

    try:
        result = proc.run(list(argv), timeout=timeout)
    except MlkitError as exc:  # a ProcTimeoutError: the controller does not answer
        raise SlurmUnavailableError(
            f"{exe}: the Slurm controller did not answer within {timeout:g}s",
            hint="check `sinfo` and that slurmctld is up (MLKIT_SLURM_TIMEOUT sets the wait)",
        ) from exc
    if result.returncode != 0 and any(s in (result.stderr or "") for s in _UNREACHABLE):
        first = (result.stderr or "").strip().splitlines()[0]
        raise SlurmUnavailableError(
            f"{exe}: cannot reach the Slurm controller ({first})",
            hint="check `sinfo`, SLURM_CONF and that slurmctld and munged are running",
        )
    return result


def sbatch(script: str, *, cwd: str | None = None, extra: Sequence[str] = ()) -> str:
    """Submit `script` (a path); the job id. LaunchError with Slurm's message when it refuses."""
    result = slurm(["sbatch", "--parsable", *extra, script], timeout=SUBMIT_TIMEOUT)
    if result.returncode != 0:
        message = " ".join((result.stderr or result.stdout or "").split())
        raise LaunchError(
            f"sbatch refused the job: {message or f'exit {result.returncode}'}",
            hint="fix the --backend-config value it names (see `sinfo` for partitions)",
        )
    job_id = (result.stdout or "").strip().split(";")[0]  # "123" or "123;cluster"
    if not job_id.isdigit():
        raise LaunchError(
            f"sbatch printed no job id: {result.stdout!r}", hint="run sbatch by hand to see why"
        )
    return job_id


def squeue(job_ids: Sequence[str]) -> list[list[str]]:
    """One `squeue` for all `job_ids` (array tasks one per line), in every state the controller
    still holds (`-t all`: an ended job stays there for MinJobAge, 300 s by default). Rows of
    (job id as squeue shows it, 123_4 for an array task; raw id; state; reason; nodes; exit code
    as sacct writes it, "3:0")."""
    if not job_ids:
        return []
    result = slurm(["squeue", "-h", "-r", "-t", "all", "-O", SQUEUE_FIELDS, "-j", ",".join(job_ids)])
    if result.returncode != 0 and "Invalid job id" not in (result.stderr or ""):
        raise SlurmUnavailableError(
            f"squeue failed: {(result.stderr or '').strip()}", hint="check `squeue` by hand"
        )
    rows = []
    for line in (result.stdout or "").splitlines():
        fields = [f.strip() for f in line.split("|")]
        if len(fields) < 7:
            continue
        raw, array_job, task, state, reason, nodes, status = fields[:7]
        shown = f"{array_job}_{task}" if task not in ("", "N/A") else raw
        rows.append([shown, raw, state, reason, nodes, _exit_code(status)])
    return rows


def own_job_outputs() -> list[tuple[str, str]]:
    """(job id, --output pattern as submitted) of every job of this user the controller holds (`squeue
    --me -t all`): how a run whose submitter died while sbatch ran finds its job (the pattern names
    the run's own directory)."""
    result = slurm(["squeue", "-h", "--me", "-t", "all", "-O", "JobID:|,StdOut:|"])
    if result.returncode != 0:
        raise SlurmUnavailableError(
            f"squeue failed: {(result.stderr or '').strip()}", hint="check `squeue` by hand"
        )
    rows = []
    for line in (result.stdout or "").splitlines():
        job, sep, rest = line.partition("|")
        if sep and job.strip().isdigit():
            rows.append((job.strip(), rest.rsplit("|", 1)[0].strip()))
    return rows


def _exit_code(status: str) -> str:
    """squeue's raw wait status (1792) as sacct's exit:signal ("7:0"); "" when there is none."""
    if not status.isdigit():
        return ""
    value = int(status)
    return f"{value >> 8}:{value & 0x7F}"


def sacct(job_ids: Sequence[str]) -> tuple[list[list[str]], str]:
    """Slurm's record of ended jobs: (rows of SACCT_FIELDS, source). `sacct` with accounting
    (slurmdbd); without it (Slurm answers at once that accounting is disabled, no controller
    round trip) the job-completion log, `sacct -c`."""
    if not job_ids:
        return [], "none"
    base = ["sacct", "-X", "-n", "-P", "-o", SACCT_FIELDS, "-j", ",".join(job_ids)]
    result = slurm(base)
    source = "sacct"
    if result.returncode != 0 and ACCOUNTING_DISABLED in (result.stderr or ""):
        result = slurm([base[0], "-c", *base[1:]])
        source = "jobcomp"
    if result.returncode != 0:
        return [], "none"
    return [line.split("|") for line in (result.stdout or "").splitlines() if line.count("|") >= 4], source


def scancel(job_ids: Sequence[str], *, signal: str | None = None, batch: bool = False) -> list[str]:
    """Cancel (or signal) the jobs; the ids Slurm no longer knows (long gone: nothing to cancel).
    LaunchError for any other refusal."""
    argv = ["scancel"]
    if signal:
        argv.append(f"--signal={signal}")
    if batch:
        argv.append("--batch")
    result = slurm([*argv, *job_ids], timeout=SUBMIT_TIMEOUT)
    return scancel_unknown(job_ids, result.returncode, result.stderr or "")


def scancel_unknown(job_ids: Sequence[str], returncode: int, stderr: str) -> list[str]:
    """What scancel's answer means: the ids it reported as unknown (`Kill job error on job id 7:
    Invalid job id specified`: Slurm forgot the job, so there is nothing to cancel; Slurm 22.05
    says nothing and exits 0). LaunchError for any other error."""
    unknown = _INVALID_JOB.findall(stderr)
    other = [
        line
        for line in stderr.splitlines()
        if line.strip() and "already completing or completed" not in line and not _INVALID_JOB.search(line)
    ]
    if returncode != 0 and other:
        raise LaunchError(
            f"scancel {' '.join(job_ids)} failed: {' '.join(' '.join(other).split())}",
            hint="check the job with squeue -j",
        )
    return unknown


_INVALID_JOB = re.compile(r"job id (\S+): Invalid job id specified")


def cluster_name() -> str:
    """The cluster's name from slurm.conf (SLURM_CONF, else /etc/slurm/slurm.conf): read locally,
    no controller round trip ('' when it cannot be read, e.g. a configless client)."""
    path = os.environ.get("SLURM_CONF") or "/etc/slurm/slurm.conf"
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, sep, value = line.partition("=")
                if sep and key.strip().lower() == "clustername":
                    return value.split("#")[0].strip()
    except OSError:
        pass
    return ""


def hostnames(nodelist: str) -> list[str]:
    """`scontrol show hostnames`: node[01-03] -> node01, node02, node03."""
    result = slurm(["scontrol", "show", "hostnames", nodelist])
    return (result.stdout or "").split()
