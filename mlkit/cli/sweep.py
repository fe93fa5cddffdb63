"""`mlkit sweep DIR -P ...`, `mlkit sweep show SWEEP`, `mlkit sweep resume SWEEP`.

Thin: parse the flags, call mlkit.sweep.driver, render mlkit.sweep.results. Optuna is loaded by
the driver when a sweep runs, never when this module is imported.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
import typer.core

from mlkit.cli import output, toplevel
from mlkit.cli.output import handle_errors
from mlkit.errors import UsageError

if TYPE_CHECKING:  # annotations only: `mlkit --help` must not load the driver
    from mlkit.sweep.driver import SweepOutcome
    from mlkit.sweep.results import SweepTable

_SEARCH = "Search"
_TRIALS = "Trials"
_RUN = "Store and experiment"


class _DefaultGroup(typer.core.TyperGroup):
    """`mlkit sweep DIR ...` is `mlkit sweep start DIR ...`; `show` and `resume` are subcommands."""

    default_command = "start"

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = [self.default_command, *args]
        return list(super().parse_args(ctx, args))


sweep_app = typer.Typer(
    name="sweep",
    cls=_DefaultGroup,
    help=toplevel.help_text(
        "sweep", "Example: mlkit sweep projects/cnn -P lr=1e-4,3e-4,1e-3 -P width=32,64 --parallel 4"
    ),
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def register(app: typer.Typer) -> None:
    """Add `mlkit sweep` to the root app."""
    app.add_typer(sweep_app, name="sweep")


def _seconds(value: str | None, flag: str) -> float | None:
    if value is None:
        return None
    # import budget: units loads only when the flag is given
    from mlkit.units import parse_duration

    return parse_duration(value, flag=flag)


def _auto_int(value: str | None, flag: str) -> int | None:
    if value is None or value == "auto":
        return None
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"{flag} {value!r}: not a whole number", hint=f"e.g. {flag} 4 (or auto)") from None


@sweep_app.command("start")
@handle_errors
def start(
    project_dir: Path = typer.Argument(
        ..., metavar="PROJECT_DIR", help="Project directory (with an MLproject)."
    ),
    param: list[str] = typer.Option(
        None,
        "-P",
        "--param-list",
        metavar="NAME=VALUES",
        help="A parameter and its values: a,b,c | range(a,b[,step]) | uniform(a,b) | loguniform(a,b) | "
        "int(a,b) | choice(a,b,...) | one value (repeatable).",
        rich_help_panel=_SEARCH,
    ),  # fmt: skip
    entry_point: str = typer.Option(
        "main", "-e", "--entry-point", help="Entry point.", rich_help_panel=_SEARCH
    ),
    method: str = typer.Option(
        None,
        "--method",
        help="grid | random | tpe (default: grid for lists, tpe for distributions).",
        rich_help_panel=_SEARCH,
    ),  # fmt: skip
    trials: int = typer.Option(
        None, "--trials", help="Trials of a random / tpe sweep.", rich_help_panel=_SEARCH
    ),
    metric: str = typer.Option(
        None, "--metric", help="The metric to optimise / prune on.", rich_help_panel=_SEARCH
    ),
    maximize: bool = typer.Option(
        False,
        "--maximize/--minimize",
        help="Direction of --metric (default: minimize).",
        rich_help_panel=_SEARCH,
    ),
    seed: int = typer.Option(
        None, "--seed", help="Seed of the random / tpe sampler.", rich_help_panel=_SEARCH
    ),
    prune: str = typer.Option(
        None, "--prune", help="median | hyperband: stop trials early on --metric.", rich_help_panel=_SEARCH
    ),
    prune_warmup: int = typer.Option(
        0, "--prune-warmup", metavar="STEPS", help="Never prune before this step.", rich_help_panel=_SEARCH
    ),
    prune_startup: int = typer.Option(
        5,
        "--prune-startup",
        metavar="TRIALS",
        help="Median: prune only after this many finished trials.",
        rich_help_panel=_SEARCH,
    ),  # fmt: skip
    parallel: str = typer.Option(
        None,
        "--parallel",
        metavar="K|auto",
        help="Trials at once (default: GPUs / --gpus-per-trial, else 1).",
        rich_help_panel=_TRIALS,
    ),  # fmt: skip
    gpus_per_trial: str = typer.Option(
        None,
        "--gpus-per-trial",
        metavar="N|auto",
        help="GPUs each trial leases (default: 1, or 0 without GPUs).",
        rich_help_panel=_TRIALS,
    ),  # fmt: skip
    timeout: str = typer.Option(
        None,
        "--timeout",
        metavar="DURATION",
        help="Stop the whole sweep after this long (exit 124).",
        rich_help_panel=_TRIALS,
    ),  # fmt: skip
    trial_timeout: str = typer.Option(
        None,
        "--trial-timeout",
        metavar="DURATION",
        help="Kill a trial after this long.",
        rich_help_panel=_TRIALS,
    ),
    env_manager: str = typer.Option(
        "auto", "--env-manager", help="local | auto | uv | conda.", rich_help_panel=_TRIALS
    ),
    system_metrics_interval: float = typer.Option(
        None,
        "--system-metrics-interval",
        metavar="SECONDS",
        help="Each trial's sampling period (0: off).",
        rich_help_panel=_TRIALS,
    ),  # fmt: skip
    backend: str = typer.Option(
        "local",
        "--backend",
        help="local | slurm: slurm submits the trials as one job array (docs/sweeps.md).",
        rich_help_panel=_TRIALS,
    ),  # fmt: skip
    backend_config: str = typer.Option(
        None,
        "--backend-config",
        metavar="KEY=VALUE,...|FILE.json",
        help="--backend slurm: sbatch options, e.g. partition=gpu,time=4h.",
        rich_help_panel=_TRIALS,
    ),  # fmt: skip
    store: str = typer.Option(None, "--store", help=output.STORE_HELP, rich_help_panel=_RUN),
    experiment_name: str = typer.Option(
        None, "--experiment-name", help="Experiment (created if missing).", rich_help_panel=_RUN
    ),
    experiment_id: str = typer.Option(
        None, "--experiment-id", help="Experiment id (must exist).", rich_help_panel=_RUN
    ),
    run_name: str = typer.Option(
        None, "--run-name", help="Name of the sweep's parent run.", rich_help_panel=_RUN
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print the results as one JSON document.", rich_help_panel=_RUN
    ),
) -> None:
    """Start a sweep: a parent run and one tracked trial run per parameter assignment.

    Example: mlkit sweep projects/cnn -P 'lr=loguniform(1e-5,1e-2)' --trials 40 --metric val_loss --parallel 4
    """
    # import budget: the driver loads when a sweep starts, not for --help
    from mlkit.cli.run import parse_params
    from mlkit.sweep.driver import SweepOptions, create_sweep, prepare

    if experiment_name is not None and experiment_id is not None:
        raise UsageError("--experiment-name and --experiment-id were both given", hint="pass one of them")
    options = SweepOptions(
        project_dir=project_dir,
        params=parse_params(param),
        entry_point=entry_point,
        method=method,
        trials=trials,
        metric=metric,
        direction="maximize" if maximize else "minimize",
        parallel=_auto_int(parallel, "--parallel"),
        gpus_per_trial=_auto_int(gpus_per_trial, "--gpus-per-trial"),
        prune=prune,
        prune_warmup=prune_warmup,
        prune_startup=prune_startup,
        seed=seed,
        timeout=_seconds(timeout, "--timeout"),
        trial_timeout=_seconds(trial_timeout, "--trial-timeout"),
        store=store,
        experiment_name=experiment_name,
        experiment_id=experiment_id,
        run_name=run_name,
        env_manager=env_manager,
        system_metrics_interval=system_metrics_interval,
        backend=backend,
        backend_config=backend_config,
    )
    prepared = prepare(options)
    launcher = _launcher(prepared.spec)
    st = output.open_store(store, create=True)
    sweep_id = create_sweep(prepared, st, argv=["mlkit", *sys.argv[1:]])
    spec = prepared.spec
    output.info(
        f"mlkit: sweep {sweep_id}: {spec['trials']} trials ({spec['method']}), {spec['parallel']} at a time, "
        f"{spec['gpus_per_trial'] or 'no'} GPU{'s' if spec['gpus_per_trial'] != 1 else ''} each"
    )
    _drive(st, sweep_id, options.timeout, as_json, launcher)


def _launcher(spec: dict[str, Any]) -> Any:
    """The launcher for the sweep's backend (None: the driver's local one)."""
    if spec.get("backend") != "slurm":
        return None
    # import budget: the Slurm launcher loads only for --backend slurm
    from mlkit.sweep.slurm import slurm_launcher

    return slurm_launcher(spec)


def _drive(
    st: Any,
    sweep_id: str,
    timeout: float | None,
    as_json: bool,
    launcher: Any,
    parallel: int | None = None,
    joined: bool = False,
) -> None:
    # import budget: the driver loads when a sweep runs
    from mlkit.sweep.driver import Driver
    from mlkit.sweep.results import sweep_table

    outcome = Driver(st, sweep_id, output.info, launcher, parallel, joined=joined).drive(timeout)
    table = sweep_table(st, sweep_id)
    _render_end(outcome, table, as_json)
    if outcome.exit_code:
        raise typer.Exit(outcome.exit_code)


def _render_end(outcome: SweepOutcome, table: SweepTable, as_json: bool) -> None:
    counts = ", ".join(f"{n} {state}" for state, n in sorted(outcome.counts.items()))
    reason = f" ({outcome.reason})" if outcome.reason else ""
    if as_json:
        doc = table.document()
        doc.update(exit_code=outcome.exit_code, failure_reason=outcome.reason, launched=outcome.launched)
        output.print_json(doc)
    else:
        _render_table(table)
    output.info(
        f"mlkit: sweep {outcome.sweep_id} {outcome.status}{reason}: {counts}; {outcome.launched} trials started"
    )
    if outcome.status == "RUNNING":  # a joined driver left; the one it joined drives on
        output.info("  its other driver still runs the sweep")
    elif outcome.status != "FINISHED":
        output.info(f"  resume with: mlkit sweep resume {outcome.sweep_id}")


def _fmt_metric(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def _rows(table: SweepTable) -> tuple[list[str], list[list[Any]]]:
    columns = ["trial", "status", table.metric or "metric", *table.params, "duration", "run_id"]
    rows = []
    for t in table.trials:
        duration = "" if t.duration_s is None else f"{t.duration_s:.1f}s"
        rows.append([t.slot, t.status, _fmt_metric(t.metric), *(t.params.get(p, "") for p in table.params),
                     duration, t.run_id])  # fmt: skip
    return columns, rows


def _render_table(table: SweepTable) -> None:
    columns, rows = _rows(table)
    arrow = "lowest" if table.direction == "minimize" else "highest"
    title = f"sweep {table.name} ({table.sweep_id[:8]}): {table.method}, {table.metric or 'no metric'} {arrow} first"
    output.print_table(columns, rows, title=title if sys.stdout.isatty() else None)


@sweep_app.command("show")
@handle_errors
def show(
    sweep: str = typer.Argument(..., metavar="SWEEP", help="The sweep's run id, id prefix or run name."),
    as_json: bool = typer.Option(
        False, "--json", help="One JSON document (a list of trials under `trials`)."
    ),
    as_csv: bool = typer.Option(False, "--csv", help="CSV: one row per trial."),
    store: str = typer.Option(None, "--store", help=output.STORE_HELP),
    experiment_name: str = typer.Option(
        None,
        "--experiment-name",
        help="Look the sweep up in this experiment only (a name shared across experiments).",
    ),
) -> None:
    """The trials of a sweep, best first: params, metric, status, duration, run id.

    Example: mlkit sweep show 3f2a9c --csv > trials.csv
    """
    # import budget: the results table loads when it is shown
    from mlkit.sweep.driver import resolve_sweep
    from mlkit.sweep.results import sweep_table

    if as_json and as_csv:
        raise UsageError("--json and --csv were both given", hint="pass one of them")
    st = output.open_store(store)
    table = sweep_table(st, resolve_sweep(st, sweep, experiment_name))
    if as_json:
        output.print_json(table.document())
    elif as_csv:
        columns, _ = _rows(table)
        output.print_csv(columns, ([t.slot, t.status, t.metric, *(t.params.get(p, "") for p in table.params),
                                    t.duration_s, t.run_id] for t in table.trials))  # fmt: skip
    else:
        _render_table(table)


@sweep_app.command("resume")
@handle_errors
def resume(
    sweep: str = typer.Argument(..., metavar="SWEEP", help="The sweep's run id, id prefix or run name."),
    timeout: str = typer.Option(
        None, "--timeout", metavar="DURATION", help="Stop the sweep after this long (exit 124)."
    ),
    join: bool = typer.Option(
        False, "--join", help="Drive a sweep whose driver is still running, alongside it (one shared study)."
    ),
    parallel: int = typer.Option(None, "--parallel", metavar="K", help="Trials at once for this driver."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as one JSON document."),
    store: str = typer.Option(None, "--store", help=output.STORE_HELP),
    experiment_name: str = typer.Option(
        None,
        "--experiment-name",
        help="Look the sweep up in this experiment only (a name shared across experiments).",
    ),
) -> None:
    """Run the trials of a sweep that did not finish (FAILED, KILLED but not pruned, or never run).

    Example: mlkit sweep resume 3f2a9c
    """
    # import budget: the driver loads when a sweep runs
    from mlkit.sweep.driver import load_spec, reopen, resolve_sweep

    if parallel is not None and parallel < 1:
        raise UsageError(f"--parallel {parallel}: must be 1 or more", hint="e.g. --parallel 4")
    st = output.open_store(store)
    sweep_id = resolve_sweep(st, sweep, experiment_name)
    spec = load_spec(st, sweep_id)
    if parallel is not None:
        spec["parallel"] = parallel
    launcher = _launcher(spec)
    joined = reopen(st, sweep_id, join=join)
    output.info(f"mlkit: sweep {sweep_id}: {'joining its running driver' if joined else 'resuming'}")
    _drive(st, sweep_id, _seconds(timeout, "--timeout"), as_json, launcher, parallel, joined)


@sweep_app.command("cancel")
@handle_errors
def cancel(
    sweep: str = typer.Argument(..., metavar="SWEEP", help="The sweep's run id, id prefix or run name."),
    as_json: bool = typer.Option(False, "--json", help="Print what was stopped as one JSON document."),
    store: str = typer.Option(None, "--store", help=output.STORE_HELP),
    experiment_name: str = typer.Option(
        None,
        "--experiment-name",
        help="Look the sweep up in this experiment only (a name shared across experiments).",
    ),
) -> None:
    """Stop a sweep: its driver (as Ctrl-C would), or, when the driver is gone, its trials.

    Example: mlkit sweep cancel 3f2a9c
    """
    # import budget: the driver loads when a sweep is cancelled
    from mlkit.sweep.driver import cancel_sweep, resolve_sweep

    st = output.open_store(store)
    done = cancel_sweep(st, resolve_sweep(st, sweep, experiment_name))
    if as_json:
        output.print_json({"sweep_id": done.sweep_id, "driver_pid": done.driver_pid, "trials": done.trials})
    elif done.driver_pid is not None:
        output.info(
            f"mlkit: sweep {done.sweep_id}: stopped its driver (pid {done.driver_pid}) and its trials"
        )
    else:
        output.info(f"mlkit: sweep {done.sweep_id}: cancelled; {len(done.trials)} trials stopped")
