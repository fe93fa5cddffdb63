"""The batch script and what it runs (pure: strings and argv lists, nothing started here).

The script is a plain sbatch file (resubmittable by hand: `sbatch job.sh`): `#SBATCH` lines for
the request, the site's `setup` lines, then `exec PYTHON -m mlkit.backends.slurm.job job.json`.
job.json names the store and, per task, the `mlkit run ... --run-id RUN --backend local` argv
that runs inside the allocation (one task; or one per array index for a job array).
With `--nodes K`, the job step starts one supervisor per node with `srun`, each running torchrun
with the c10d rendezvous on the allocation's first node (`node_argv`).
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlkit.proc import mlkit_argv

if TYPE_CHECKING:
    from mlkit.backends.slurm.config import SlurmConfig
    from mlkit.runner.options import RunOptions

# `python -m M` puts the working directory first on sys.path, and a job works in the directory sbatch
# was called from (/tmp, a group's shared directory: others may write there). So the batch step
# starts in its own directory (`cd` in the script; srun in it too) and goes back to the submit
# directory once loaded, and starts the supervisor without the working directory on sys.path
# (`proc.mlkit_argv`).
JOB_MODULE = "mlkit.backends.slurm.job"
SPEC_VERSION = 1
# sbatch reads an `#SBATCH` line itself: whitespace splits it, `"` toggles quoting, `\` escapes and
# `#` starts a comment (even inside quotes); a newline ends the directives and the rest is shell
_JOB_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.+\-]")
UNQUOTABLE = "\"'#\\\n\r\0"
_PATH_UNSAFE = re.compile(r"[\s\"'#\\\0]")


@dataclass(frozen=True)
class Task:
    """One run the job (or one array task) executes: its id and the argv after `python -m mlkit`."""

    run_id: str
    argv: tuple[str, ...]


def local_argv(options: RunOptions, run_id: str, store_root: Path) -> tuple[str, ...]:
    """`mlkit run` flags that run `options` on the existing run `run_id` inside the allocation.

    Paths are made absolute (the job starts in another directory); the GPUs are the allocation's
    (`--gpus all` sees exactly them), so --min-free-memory & co. are Slurm's business here."""
    argv: list[str] = [
        "run",
        str(Path(options.project_dir).resolve()),
        "--run-id",
        run_id,
        "--backend",
        "local",
    ]
    argv += ["-e", options.entry_point, "--store", str(store_root), "--env-manager", options.env_manager]
    for key, value in options.params.items():
        argv += ["-P", f"{key}={value}"]
    if options.strict_params:
        argv.append("--strict-params")
    if options.conda_exe:
        argv += ["--conda-exe", options.conda_exe]
    if options.timeout is not None:
        argv += ["--timeout", f"{options.timeout:g}s"]
    argv += ["--gpus", inner_gpus(options.gpus)]
    argv += ["--system-metrics-interval", f"{options.system_metrics_interval:g}"]
    if options.nproc_per_node is not None:
        argv += ["--nproc-per-node", str(options.nproc_per_node)]
    if options.lock:
        argv += ["--lock", options.lock]
    if options.on_finish:
        argv += ["--on-finish", options.on_finish]
    if options.container_engine != "auto":  # a docker_env project runs in its container on the node
        argv += ["--container-engine", options.container_engine]
    if options.build_image:
        argv.append("--build-image")
    for arg in options.docker_args:
        argv += ["--docker-args", arg]
    return tuple(argv)


def inner_gpus(spec: str) -> str:
    """The --gpus a job passes to its supervisor: every GPU of the allocation, or none."""
    return "none" if spec in ("none", "0", "auto") else "all"


def gpu_count(spec: str) -> int:
    """How many GPUs `--gpus` asks Slurm for (0: none). `auto` asks for none on a cluster."""
    if spec in ("auto", "none", ""):
        return 0
    if spec.isdigit():
        return int(spec)
    # import budget: errors only when the request is refused
    from mlkit.errors import UsageError

    raise UsageError(
        f"--gpus {spec}: with --backend slurm, ask for a number of GPUs",
        hint="e.g. --gpus 2 (Slurm picks which; `all` or GPU ids mean nothing before the job starts)",
    )


def safe_job_name(text: str) -> str:
    """A job name sbatch reads as one word: characters outside [A-Za-z0-9_.+-] become `_`."""
    return _JOB_NAME_UNSAFE.sub("_", text)[:120]


def quoted(value: str) -> str:
    """`value` as one `#SBATCH` word: in double quotes when it has whitespace. Values holding a
    character sbatch cannot take inside quotes (see UNQUOTABLE) are refused where they are read."""
    if any(c in value for c in UNQUOTABLE):
        raise ValueError(f"cannot be written in an #SBATCH line: {value!r}")
    return f'"{value}"' if any(c.isspace() for c in value) else value


def output_pattern(workdir: Path, name: str) -> str:
    """sbatch's --output for a file `name` (holding %j, %A, ...) in `workdir`: sbatch expands `%`
    anywhere in it, so a `%` of the directory itself is written `%%`."""
    return f"{str(workdir).replace('%', '%%')}/{name}"


def check_path(path: Path, what: str) -> None:
    """Refuse a path that cannot be written as an `#SBATCH` value (whitespace, quotes, `#`, `\\`,
    newline): the batch script names it (`--output=`)."""
    text = str(path)
    if _PATH_UNSAFE.search(text):
        # import budget: errors only when the path is refused
        from mlkit.errors import UsageError

        raise UsageError(
            f"{what} {text!r}: Slurm's #SBATCH lines cannot hold whitespace, quotes, '#' or '\\' in a path",
            hint="use a store directory whose path has none of them (e.g. --store /shared/mlruns)",
        )


def sbatch_lines(
    config: SlurmConfig,
    *,
    job_name: str,
    output: str,
    gpus: int,
    nodes: int,
    array: str | None = None,
) -> list[str]:
    """The `#SBATCH` directives, in a stable order."""
    lines = [
        f"--job-name={config.options.get('job-name') or safe_job_name(job_name)}",
        f"--output={output}",
        "--open-mode=append",
    ]
    if config.requeue:
        lines.append("--requeue")
    else:
        lines.append("--no-requeue")
    if config.signal_grace:
        lines.append(f"--signal=B:USR2@{config.signal_grace}")
    if nodes > 1:
        lines += [f"--nodes={nodes}", "--ntasks-per-node=1"]
    if gpus:
        kind = config.options.get("gpu-type")
        count = f"{kind}:{gpus}" if kind else str(gpus)
        lines.append(f"--gpus-per-node={count}" if nodes > 1 else f"--gpus={count}")
    if array:
        lines.append(f"--array={array}")
    lines += [a for a in config.sbatch_args() if not a.startswith("--job-name=")]
    return lines


def render_script(
    directives: Sequence[str],
    *,
    python: str,
    spec_path: Path,
    setup: Sequence[str] = (),
    comment: str = "",
) -> str:
    """The batch script's text."""
    out = ["#!/bin/bash"]
    out += [f"#SBATCH {line}" for line in directives]
    if comment:
        out += [f"# {line}" for line in comment.splitlines()]
    out.append(f"# resubmit by hand: sbatch {shlex.quote(str(spec_path.parent / 'job.sh'))}")
    out += list(setup)
    out.append(f"cd -- {shlex.quote(str(spec_path.parent))} || exit 1  # see JOB_MODULE")
    out.append(f"exec {shlex.quote(python)} -m {JOB_MODULE} {shlex.quote(str(spec_path))}")
    return "\n".join(out) + "\n"


def job_spec(
    tasks: Sequence[Task], *, store_root: Path, nodes: int, rdzv_port: int, python: str
) -> dict[str, Any]:
    """job.json: what the job step reads inside the allocation."""
    return {
        "version": SPEC_VERSION,
        "store": str(store_root),
        "python": python,
        "nodes": nodes,
        "rdzv_port": rdzv_port,
        "tasks": [{"run_id": t.run_id, "argv": list(t.argv)} for t in tasks],
    }


def supervisor_argv(python: str, argv: Sequence[str]) -> list[str]:
    """`mlkit ARGV` in `python`, without the working directory on sys.path."""
    return mlkit_argv(python, *argv)


def node_argv(argv: Sequence[str], *, nnodes: int, node_rank: int, head: str, port: int) -> list[str]:
    """One node's `mlkit run` argv in a K-node job: torchrun's c10d rendezvous on `head`."""
    return [
        *argv,
        "--nnodes",
        str(nnodes),
        "--node-rank",
        str(node_rank),
        "--rdzv-endpoint",
        f"{head}:{port}",
    ]


def srun_argv(python: str, spec_path: Path, *, nodes: int) -> list[str]:
    """The job step that starts one supervisor per node (each reads its rank from SLURM_NODEID)."""
    return [
        "srun", f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
        "--label", python, "-m", JOB_MODULE, str(spec_path), "--node",
    ]  # fmt: skip


def looks_node_local(path: Path) -> bool:
    """True when the store is under a directory that is normally private to one machine."""
    resolved = str(Path(path).resolve())
    local = ["/tmp", "/var/tmp", "/dev/shm", "/run"]
    tmpdir = os.environ.get("TMPDIR")
    if tmpdir:
        local.append(str(Path(tmpdir).resolve()))
    return any(resolved == p or resolved.startswith(p.rstrip("/") + "/") for p in local)
