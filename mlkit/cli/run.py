"""`mlkit run <dir>`: parse the flags, call `mlkit.runner.run_project`, render what it returns."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from mlkit.cli import output
from mlkit.errors import MlkitError, UsageError

# Options are grouped in --help with rich panels; the names match `mlflow run` where MLflow has one.
_RUN = "Run"
_GPU = "GPUs"
_DIST = "Multi-GPU / multi-node (torchrun)"
_CRON = "Unattended use"


def parse_params(values: list[str] | None) -> dict[str, str]:
    """`-P k=v` items split at the first `=`; a missing `=` or a repeated name is a usage error."""
    params: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(
                f"-P {item!r}: expected NAME=VALUE", hint="e.g. -P lr=0.01 (repeat -P for each parameter)"
            )
        if key in params:
            raise UsageError(f"-P {key}: given twice", hint="pass each parameter once")
        params[key] = value
    return params


def _duration(value: str | None, flag: str) -> float | None:
    if value is None:
        return None
    from mlkit.gpu.units import parse_duration

    return parse_duration(value, flag=flag)


def _memory(value: str | None) -> int | None:
    if value is None:
        return None
    from mlkit.gpu.units import parse_memory

    return parse_memory(value, flag="--min-free-memory")


def _json_on_error(fn: Callable[..., Any]) -> Callable[..., Any]:
    """With --json, a failure before any run exists still prints one JSON document (run_id null)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MlkitError as exc:
            if kwargs.get("json_out"):
                output.print_json(
                    {"run_id": None, "status": None, "exit_code": int(exc.exit_code),
                     "error": exc.message, "hint": exc.hint}
                )  # fmt: skip
            raise

    return wrapper


@output.handle_errors
@_json_on_error
def run(
    project_dir: Path = typer.Argument(
        ..., help="Project directory (with an MLproject file, or a bare directory of scripts)."
    ),
    entry_point: str = typer.Option(
        "main", "-e", "--entry-point", help="Entry point name, or a .py / .sh file.", rich_help_panel=_RUN
    ),
    param: list[str] | None = typer.Option(
        None,
        "-P",
        "--param-list",
        metavar="NAME=VALUE",
        help="A parameter (repeatable).",
        rich_help_panel=_RUN,
    ),
    experiment_name: str | None = typer.Option(
        None,
        "--experiment-name",
        help="Experiment (created if missing). Env: MLKIT_EXPERIMENT_NAME / MLFLOW_EXPERIMENT_NAME.",
        rich_help_panel=_RUN,
    ),
    experiment_id: str | None = typer.Option(
        None, "--experiment-id", help="Experiment id (must exist).", rich_help_panel=_RUN
    ),
    run_name: str | None = typer.Option(
        None, "--run-name", help="Name of the run (default: a random one).", rich_help_panel=_RUN
    ),
    env_manager: str = typer.Option(
        "auto", "--env-manager", help="local | auto | uv | conda.", rich_help_panel=_RUN
    ),
    conda_exe: str | None = typer.Option(
        None,
        "--conda-exe",
        help="Use this conda/mamba/micromamba instead of py-rattler.",
        rich_help_panel=_RUN,
    ),
    store: str | None = typer.Option(
        None,
        "--store",
        help=output.STORE_HELP,
        rich_help_panel=_RUN,
    ),
    timeout: str | None = typer.Option(
        None,
        "--timeout",
        metavar="DURATION",
        help="Kill the run after this long (90s, 30m, 3h); exit 124.",
        rich_help_panel=_RUN,
    ),
    json_out: bool = typer.Option(
        False,
        "--json",
        help="Print one JSON summary on stdout at the end (the run's output goes to stderr).",
        rich_help_panel=_RUN,
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Show the resolved plan (argv, params, cwd, env, store) and create nothing.",
        rich_help_panel=_RUN,
    ),
    gpus: str = typer.Option(
        "auto", "--gpus", help="auto | none | all | N | 0,2 | UUIDs.", rich_help_panel=_GPU
    ),
    min_free_memory: str | None = typer.Option(
        None,
        "--min-free-memory",
        metavar="SIZE",
        help="Only GPUs with this much free memory (20GiB).",
        rich_help_panel=_GPU,
    ),
    max_gpu_util: float | None = typer.Option(
        None, "--max-gpu-util", metavar="PERCENT", help="Only GPUs at most this busy.", rich_help_panel=_GPU
    ),
    exclude_busy: bool = typer.Option(
        False, "--exclude-busy", help="Only GPUs with no processes on them.", rich_help_panel=_GPU
    ),
    wait: str | None = typer.Option(
        None,
        "--wait",
        metavar="DURATION",
        help="Wait this long for free GPUs (exit 76 when it runs out).",
        rich_help_panel=_GPU,
    ),
    system_metrics_interval: float = typer.Option(
        5.0,
        "--system-metrics-interval",
        metavar="SECONDS",
        help="System metrics sampling period; 0 turns it off.",
        rich_help_panel=_GPU,
    ),
    nnodes: int | None = typer.Option(
        None, "--nnodes", help="Number of nodes (torchrun c10d rendezvous).", rich_help_panel=_DIST
    ),
    node_rank: int | None = typer.Option(
        None, "--node-rank", help="This node's rank.", rich_help_panel=_DIST
    ),
    rdzv_endpoint: str | None = typer.Option(
        None,
        "--rdzv-endpoint",
        metavar="HOST[:PORT]",
        help="Rendezvous endpoint (node 0).",
        rich_help_panel=_DIST,
    ),
    nproc_per_node: int | None = typer.Option(
        None,
        "--nproc-per-node",
        help="Processes per node (default: one per leased GPU).",
        rich_help_panel=_DIST,
    ),
    lock: str | None = typer.Option(
        None,
        "--lock",
        metavar="NAME",
        help="Hold this host-wide lock for the whole run (exit 75 when held).",
        rich_help_panel=_CRON,
    ),
    lock_wait: str | None = typer.Option(
        None, "--lock-wait", metavar="DURATION", help="Wait this long for --lock.", rich_help_panel=_CRON
    ),
    skip_if_done: bool = typer.Option(
        False,
        "--skip-if-done",
        help="Exit 0 if a FINISHED run with the same fingerprint exists.",
        rich_help_panel=_CRON,
    ),
    on_finish: str | None = typer.Option(
        None,
        "--on-finish",
        metavar="CMD",
        envvar="MLKIT_ON_FINISH",
        help="Run CMD when the run ends (MLKIT_RUN_ID, MLKIT_STATUS, MLKIT_EXIT_CODE, ... set).",
        rich_help_panel=_CRON,
    ),
) -> None:
    """Run a project's entry point as a tracked, supervised run.

    Example: mlkit run projects/cnn -P epochs=5 --gpus 1 --timeout 2h
    """
    from mlkit.runner.session import DryRun, RunOptions, Skipped, run_project
    from mlkit.runner.supervise import Interrupted

    options = RunOptions(
        project_dir=project_dir,
        entry_point=entry_point,
        params=parse_params(param),
        experiment_name=experiment_name,
        experiment_id=experiment_id,
        run_name=run_name,
        env_manager=env_manager,
        conda_exe=conda_exe,
        store=store,
        timeout=_duration(timeout, "--timeout"),
        dry_run=dry_run,
        gpus=gpus,
        min_free_memory=_memory(min_free_memory),
        max_gpu_util=max_gpu_util,
        exclude_busy=exclude_busy,
        wait=_duration(wait, "--wait"),
        system_metrics_interval=system_metrics_interval,
        nnodes=nnodes,
        node_rank=node_rank,
        rdzv_endpoint=rdzv_endpoint,
        nproc_per_node=nproc_per_node,
        lock=lock,
        lock_wait=_duration(lock_wait, "--lock-wait"),
        skip_if_done=skip_if_done,
        on_finish=on_finish or None,
        argv=("mlkit", *sys.argv[1:]),
    )
    child_out = sys.stderr.buffer if json_out else sys.stdout.buffer
    try:
        outcome = run_project(options, notify=output.info, stdout=child_out, stderr=sys.stderr.buffer)
    except Interrupted as exc:
        output.info("Interrupted.")
        raise typer.Exit(128 + exc.signum) from None

    if isinstance(outcome, DryRun):
        _render_dry_run(outcome, json_out)
        return
    if isinstance(outcome, Skipped):
        if json_out:
            output.print_json(
                {"skipped": True, "run_id": outcome.run_id, "experiment_id": outcome.experiment_id}
            )
        else:
            output.line(outcome.run_id)
            output.info(f"mlkit: skipped: run {outcome.run_id} already FINISHED with the same fingerprint")
        return

    result = outcome
    if result.error is not None:
        if output.state.traceback:
            import traceback

            traceback.print_exception(result.error)
        output.error(result.error.message, result.error.hint)
    code = f"exit {result.exit_code}"
    if result.signal and result.failure_reason in ("signal", "timeout"):
        code += f", {result.signal}"
    if result.failure_reason and result.failure_reason not in ("exit_code", "signal"):
        code += f", {result.failure_reason}"
    output.info(f"mlkit: run {result.run_id} {result.status} in {result.duration_s:.1f}s ({code})")
    if json_out:
        output.print_json(result.summary())
    if result.exit_code:
        raise typer.Exit(result.exit_code)


def _render_dry_run(dry: object, json_out: bool) -> None:
    from mlkit.runner.proc import describe

    plan = dry.plan  # type: ignore[attr-defined]
    doc = {
        "dry_run": True,
        "project": str(plan.cwd),
        "entry_point": plan.entry_point,
        "parameters": {k: {"type": plan.types.get(k, "string"), "value": v} for k, v in plan.params.items()},
        "argv": plan.argv,
        "shell": plan.shell,
        "cwd": str(plan.cwd),
        "env_manager": dry.env_manager,  # type: ignore[attr-defined]
        "store": str(dry.store_root),  # type: ignore[attr-defined]
        "experiment": dry.experiment,  # type: ignore[attr-defined]
        "gpus": dry.gpus,  # type: ignore[attr-defined]
        "torchrun": plan.torchrun,
        "timeout_s": plan.timeout,
        "notices": plan.notices,
    }
    if json_out:
        output.print_json(doc)
        return
    lines = [f"entry point:  {plan.entry_point}", "parameters:"]
    if plan.params:
        width = max(len(k) for k in plan.params)
        for key, value in plan.params.items():
            lines.append(f"  {key:<{width}}  ({plan.types.get(key, 'string')}) = {value!r}")
    else:
        lines[-1] += "   (none)"
    lines += [
        f"command:      {describe(plan.argv)}",
        f"cwd:          {plan.cwd}",
        f"env manager:  {doc['env_manager']}",
        f"store:        {doc['store']}",
        f"experiment:   {doc['experiment']}",
        f"gpus:         {doc['gpus']}",
    ]
    if plan.timeout:
        lines.append(f"timeout:      {plan.timeout:g}s")
    lines += [f"note:         {n}" for n in plan.notices]
    lines.append("(dry run: nothing was created)")
    sys.stdout.write("\n".join(lines) + "\n")


def register(app: typer.Typer) -> None:
    """Add `mlkit run` to the app."""
    app.command("run", no_args_is_help=True)(run)
