"""The flags of `mlkit run`, declared once.

`mlkit.cli.run.register` builds the typer command from this table (its `--help`, its errors, the
completion); `parse` reads a plain, well-formed `mlkit run` command line without importing typer
at all, which is most of what `mlkit run` costs before its child starts (issue 20). `parse`
answers only what it is sure of, exactly as click would: anything else (help, an unknown or
misspelt flag, a value click would refuse, a flag given a value, `-Pk=v` glued to its flag, a
second positional argument, MLKIT_TRACEBACK set) returns None, and the typer command reads the
same line and answers it as always. `tests/runner/test_run_flags.py` holds the two to the same
flags, types, defaults and values.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mlkit.cli.output import STORE_HELP

# --help groups the options under these headings; the names match `mlflow run` where MLflow has one.
RUN = "Run"
GPU = "GPUs"
DIST = "Multi-GPU / multi-node (torchrun)"
CRON = "Unattended use"
CLUSTER = "Cluster (Slurm)"
CONTAINER = "Containers (docker_env)"


class Flag:
    """One option of `mlkit run`: its parameter name, its spellings, its type (`list`: repeatable
    strings), its default and its help."""

    __slots__ = ("name", "decls", "kind", "default", "help", "metavar", "panel", "envvar")

    def __init__(
        self,
        name: str,
        decls: tuple[str, ...],
        kind: type,
        default: Any,
        help: str,
        panel: str,
        *,
        metavar: str | None = None,
        envvar: str | None = None,
    ):
        self.name, self.decls, self.kind, self.default = name, decls, kind, default
        self.help, self.panel, self.metavar, self.envvar = help, panel, metavar, envvar


PROJECT_HELP = "Project directory (with an MLproject file, or a bare directory of scripts)."

FLAGS = (
    Flag("entry_point", ("-e", "--entry-point"), str, None,
         "Entry point name, or a .py / .sh file (default: main; --dry-run without -e also lists them all).", RUN),
    Flag("param", ("-P", "--param-list"), list, None, "A parameter (repeatable).", RUN, metavar="NAME=VALUE"),
    Flag("strict_params", ("--strict-params",), bool, False,
         "Refuse -P names the entry point does not declare (default: pass them as --name value).", RUN),
    Flag("experiment_name", ("--experiment-name",), str, None,
         "Experiment (created if missing). Env: MLKIT_EXPERIMENT_NAME / MLFLOW_EXPERIMENT_NAME.", RUN),
    Flag("experiment_id", ("--experiment-id",), str, None, "Experiment id (must exist).", RUN),
    Flag("run_name", ("--run-name",), str, None, "Name of the run (default: a random one).", RUN),
    Flag("run_id", ("--run-id",), str, None,
         "Supervise this existing, unfinished run instead of creating one (as mlflow run --run-id).", RUN,
         metavar="RUN"),
    Flag("env_manager", ("--env-manager",), str, "auto", "local | auto | uv | conda | docker.", RUN),
    Flag("conda_exe", ("--conda-exe",), str, None, "Use this conda/mamba/micromamba instead of py-rattler.", RUN),
    Flag("store", ("--store",), str, None, STORE_HELP, RUN),
    Flag("timeout", ("--timeout",), str, None, "Kill the run after this long (90s, 30m, 3h); exit 124.", RUN,
         metavar="DURATION"),
    Flag("json_out", ("--json",), bool, False,
         "Print one JSON summary on stdout at the end (the run's output goes to stderr).", RUN),
    Flag("dry_run", ("--dry-run",), bool, False,
         "Show the resolved plan (argv, params, cwd, env, store) and create nothing.", RUN),
    Flag("gpus", ("--gpus",), str, "auto", "auto | none | all | N | 0,2 | UUIDs.", GPU),
    Flag("min_free_memory", ("--min-free-memory",), str, None, "Only GPUs with this much free memory (20GiB).",
         GPU, metavar="SIZE"),
    Flag("max_gpu_util", ("--max-gpu-util",), float, None, "Only GPUs at most this busy.", GPU, metavar="PERCENT"),
    Flag("exclude_busy", ("--exclude-busy",), bool, False, "Only GPUs with no processes on them.", GPU),
    Flag("wait", ("--wait",), str, None, "Wait this long for free GPUs (exit 76 when it runs out).", GPU,
         metavar="DURATION"),
    Flag("system_metrics_interval", ("--system-metrics-interval",), float, 5.0,
         "System metrics sampling period; 0 turns it off.", GPU, metavar="SECONDS"),
    Flag("nnodes", ("--nnodes",), int, None, "Number of nodes (torchrun c10d rendezvous).", DIST),
    Flag("node_rank", ("--node-rank",), int, None, "This node's rank.", DIST),
    Flag("rdzv_endpoint", ("--rdzv-endpoint",), str, None, "Rendezvous endpoint (node 0).", DIST,
         metavar="HOST[:PORT]"),
    Flag("nproc_per_node", ("--nproc-per-node",), int, None, "Processes per node (default: one per leased GPU).",
         DIST),
    Flag("lock", ("--lock",), str, None, "Hold this host-wide lock for the whole run (exit 75 when held).", CRON,
         metavar="NAME"),
    Flag("lock_wait", ("--lock-wait",), str, None, "Wait this long for --lock.", CRON, metavar="DURATION"),
    Flag("skip_if_done", ("--skip-if-done",), bool, False, "Exit 0 if a FINISHED run with the same fingerprint exists.",
         CRON),
    Flag("on_finish", ("--on-finish",), str, None,
         "Run CMD when the run ends (MLKIT_RUN_ID, MLKIT_STATUS, MLKIT_EXIT_CODE, ... set).", CRON,
         metavar="CMD", envvar="MLKIT_ON_FINISH"),
    Flag("container_engine", ("--container-engine",), str, "auto",
         "auto | docker | podman (auto: docker when its daemon answers, else podman).", CONTAINER),
    Flag("build_image", ("--build-image",), bool, False,
         "Run a derived image with the project copied to /mlflow/projects/code (MLflow's flag).", CONTAINER),
    Flag("docker_args", ("-A", "--docker-args"), list, None,
         "An engine flag for `run` (repeatable): shm-size=8g -> --shm-size 8g, privileged -> --privileged.",
         CONTAINER, metavar="NAME[=VALUE]"),
    Flag("backend", ("--backend", "-b"), str, "local",
         "local | slurm: slurm submits a batch job and returns its run id at once (docs/slurm.md).", CLUSTER),
    Flag("backend_config", ("--backend-config", "-c"), str, None,
         "sbatch options: partition=gpu,time=4h,account=ml (or a JSON file; MLflow's flag).", CLUSTER,
         metavar="KEY=VALUE,...|FILE.json"),
    Flag("nodes", ("--nodes",), int, None, "Slurm: nodes for one run (torchrun across them; --gpus is then per node).",
         CLUSTER),
    Flag("follow", ("--follow",), bool, False,
         "Slurm: stream the run's output until the job ends, and exit with its code.", CLUSTER),
)  # fmt: skip

_BY_SPELLING = {spelling: flag for flag in FLAGS for spelling in flag.decls}


def parse(args: list[str]) -> dict[str, Any] | None:
    """The values of `mlkit run ARGS` (keyword arguments of `mlkit.cli.run.run_command`), read
    exactly as the typer command reads them, or None when the line is anything but plain (see the
    module docstring) and typer must read it."""
    if "MLKIT_TRACEBACK" in os.environ:  # the root command's --traceback reads it
        return None
    values: dict[str, Any] = {flag.name: flag.default for flag in FLAGS}
    positional: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            positional.extend(args[i:])
            break
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        spelling, glued, attached = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        flag = _BY_SPELLING.get(spelling)
        if flag is None:
            return None
        if flag.kind is bool:
            if glued:
                return None
            values[flag.name] = True
            continue
        if glued:
            raw = attached
        elif i < len(args):
            raw = args[i]
            i += 1
        else:
            return None
        if flag.kind is list:
            values[flag.name] = [*(values[flag.name] or ()), raw]
            continue
        try:
            values[flag.name] = flag.kind(raw)
        except ValueError:
            return None
    if len(positional) != 1 or not positional[0]:
        return None
    for flag in FLAGS:
        if flag.envvar and values[flag.name] is None:
            values[flag.name] = os.environ.get(flag.envvar) or None
    return {"project_dir": Path(positional[0]), **values}
