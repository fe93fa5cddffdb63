"""`mlkit runs`: list, show, follow the log of, delete and restore tracked runs."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from typing import Any

import typer

from mlkit.cli import output
from mlkit.cli.output import handle_errors
from mlkit.errors import NotFoundError

runs_app = output.command_group("runs", "Example: mlkit runs list -x cnn -n 10")


def register(app: typer.Typer) -> None:
    """Add `mlkit runs` to the root app."""
    app.add_typer(runs_app, name="runs")


def fmt_time(ms: int | None) -> str:
    """Epoch ms as local 'YYYY-MM-DD HH:MM:SS' ('' for None)."""
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S") if ms else ""


def fmt_duration(start: int | None, end: int | None) -> str:
    """A run's duration as '1h02m', '3m05s' or '12.3s' (until now while running)."""
    if not start:
        return ""
    seconds = ((end or time.time() * 1000) - start) / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _fmt_value(value: float) -> str:
    return f"{value:.6g}"


def _run_json(run: Any) -> dict[str, Any]:
    info = run.info
    duration = ((info.end_time or 0) - info.start_time) / 1000 if info.end_time and info.start_time else None
    return {
        "run_id": info.run_id,
        "run_name": info.run_name,
        "experiment_id": info.experiment_id,
        "status": info.status,
        "lifecycle_stage": info.lifecycle_stage,
        "start_time": info.start_time,
        "end_time": info.end_time,
        "duration_s": duration,
        "user_id": info.user_id,
        "artifact_uri": info.artifact_uri,
        "params": run.data.params,
        "metrics": run.data.metrics,
        "tags": run.data.tags,
    }


COLUMNS_HELP = (
    "Columns to show, comma-separated or repeated: params.lr, metrics.val_*, tags.KEY, status, "
    "a bare key or glob (params and metrics); '*' for every param and metric."
)


def _short_time(ms: int | None) -> str:
    """'12-03 15:19' for this year's times, '2025-12-03' for older ones: a terminal is narrow."""
    if not ms:
        return ""
    when = datetime.fromtimestamp(ms / 1000)
    return when.strftime("%m-%d %H:%M" if when.year == datetime.now().year else "%Y-%m-%d")


def _cell(run: Any, column: Any, short: bool) -> str | None:
    """One table cell, formatted for reading: times, durations, 6 significant digits."""
    # import budget: search_grammar loads only when a run's cells are rendered
    from mlkit.tracking.search_grammar import ATTRIBUTE, METRIC

    info = run.info
    if column.kind == ATTRIBUTE:
        if column.key == "run_id":
            return info.run_id[:8] if short else info.run_id
        if column.key in ("start", "end"):
            ms = info.start_time if column.key == "start" else info.end_time
            return _short_time(ms) if short else fmt_time(ms)
        if column.key == "duration":
            return fmt_duration(info.start_time, info.end_time)
    value = column.value(run)
    if value is None:
        return None
    return _fmt_value(value) if column.kind == METRIC else str(value)


@runs_app.command("list")
@handle_errors
def list_cmd(
    experiment: list[str] = typer.Option(
        None, "--experiment", "-x", help="Experiment name or id (repeatable)."
    ),
    filter_string: str = typer.Option(
        "", "--filter", "-f", help='MLflow filter, e.g. "metrics.val_accuracy > 0.9".'
    ),
    order_by: list[str] = typer.Option(
        None, "--order-by", "-o", help="e.g. 'metrics.val_loss ASC' (repeatable)."
    ),
    columns: list[str] = typer.Option(None, "--columns", "-c", metavar="NAMES", help=COLUMNS_HELP),
    max_results: int = typer.Option(100, "--max", "-n", help="At most this many runs."),
    since: str = typer.Option(None, "--since", help="Only runs started in this window: 30m, 12h, 1d, 2w."),
    status: str = typer.Option(None, "--status", help="Only runs with this status, e.g. FAILED."),
    include_deleted: bool = typer.Option(False, "--all", help="Include deleted runs and experiments."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document (every column)."),
    as_csv: bool = typer.Option(False, "--csv", help="Print CSV (the same columns as the table)."),
    store_path: str = typer.Option(None, "--store", help=output.STORE_HELP),
) -> None:
    """List runs, newest first: the params that differ, the model's metrics, and any named column.

    The keys in --filter and --order-by are always shown. Piped or --csv, the same columns (with
    full run ids); --columns '*' gives every param and metric, --json everything.

    Example: mlkit runs list -x cnn --filter "metrics.val_accuracy > 0.9" --columns 'params.lr,metrics.val_*'
    """
    # import budget: the core loads when the command runs, not for mlkit --help
    from mlkit.tracking.columns import UnknownKey, choose_columns, keys_of, split_names, suggest
    from mlkit.tracking.queries import find_runs

    store = output.open_store(store_path)
    listing = find_runs(
        store, experiments=experiment or None, filter_string=filter_string, order_by=order_by or None,
        max_results=max_results, since=since, status=status, include_deleted=include_deleted,
    )  # fmt: skip
    runs, slurm_cells = _reconcile_slurm(store, listing.runs, status)
    names = split_names(columns)
    choice = choose_columns(runs, names, filter_string=filter_string, order_by=order_by or None)
    for warning in listing.warnings:
        output.warn(warning)
    if runs and choice.unmatched:
        known = keys_of(runs)
        for name in choice.unmatched:
            output.warn(str(UnknownKey("--columns", name, suggest(name, known))))
    if as_json:
        output.print_json([_run_json(r) for r in runs])
        return
    short = not as_csv and sys.stdout.isatty()
    headers = [c.name for c in choice.columns]
    rows = [[_cell(r, c, short) for c in choice.columns] for r in runs]
    if slurm_cells:  # job id, Slurm's state and why it waits, beside the status
        at = headers.index("status") + 1 if "status" in headers else len(headers)
        headers.insert(at, "slurm job")
        for run, row in zip(runs, rows, strict=True):
            row.insert(at, slurm_cells.get(run.info.run_id, ""))
    if short:  # on a terminal, each sweep's trials right under their sweep
        runs, rows = _fold_sweeps(runs, rows)
    hidden = choice.hidden
    if as_csv:
        output.print_csv(headers, rows)
    else:
        if short and not names:
            headers, rows, cut = _fit_width(headers, rows, output.out.width, fixed=choice.fixed)
            hidden += cut
        output.print_table(headers, rows)
    if not runs:
        output.info("No runs match.")
    elif hidden and not names and not as_csv and sys.stderr.isatty():
        output.info(f"({hidden} more columns: params equal in every run, system metrics, or past the "
                    "terminal's width; pick them with --columns, e.g. --columns '*', or see "
                    "`mlkit runs show RUN`)")  # fmt: skip


def _fold_sweeps(runs: list, rows: list[list]) -> tuple[list, list[list]]:
    """Trials listed with their sweep's parent run move under it, their first cell marked `└`."""
    parent_of = {r.info.run_id: r.data.tags.get("mlflow.parentRunId") for r in runs}
    listed = set(parent_of)
    children: dict[str, list[int]] = {}
    for i, run in enumerate(runs):
        parent = parent_of[run.info.run_id]
        if parent in listed and "mlkit.sweep.slot" in run.data.tags:
            children.setdefault(parent, []).append(i)
    if not children:
        return runs, rows
    folded = {i for group in children.values() for i in group}
    out_runs: list = []
    out_rows: list[list] = []
    for i, run in enumerate(runs):
        if i in folded:
            continue
        out_runs.append(run)
        out_rows.append(rows[i])
        for j in children.get(run.info.run_id, []):
            out_runs.append(runs[j])
            out_rows.append([f"\u2514 {rows[j][0] or ''}", *rows[j][1:]])
    return out_runs, out_rows


def _reconcile_slurm(store: Any, runs: list, status: str | None) -> tuple[list, dict[str, str]]:
    """Bring Slurm runs up to date from Slurm (one squeue + one sacct call for all of them):
    the runs, and each Slurm run's 'JOB STATE (reason)' cell."""
    # import budget: the package holds names only; its backend loads only when Slurm runs are listed
    from mlkit.backends.slurm import asks_slurm

    if not any(asks_slurm(r.data.tags, r.info.status) for r in runs):
        return runs, {}
    # import budget: the Slurm backend loads only when Slurm runs are listed
    from mlkit.backends.slurm.status import describe, reconcile

    result = reconcile(store, runs)
    for warning in result.warnings:
        output.warn(warning)
    runs = result.runs
    if status:  # the filter saw the status before Slurm was asked
        runs = [r for r in runs if r.info.status == status.upper()]
    cells = {r.info.run_id: describe(r, result.views.get(r.info.run_id)) for r in runs}
    return runs, {k: v for k, v in cells.items() if v}


def _fit_width(columns: list[str], rows: list[list], width: int, fixed: int = 5) -> tuple[list, list, int]:
    """Keep the first `fixed` columns and as many more as fit in `width`; return how many were cut."""
    used, keep = 0, []
    for i, name in enumerate(columns):
        cell = max([len(name), *(len(str(row[i] or "")) for row in rows)])
        used += min(cell, 24) + 3  # rich folds long cells; 3 for borders and padding
        if i < fixed or used <= width:
            keep.append(i)
    return ([columns[i] for i in keep], [[row[i] for i in keep] for row in rows], len(columns) - len(keep))


@runs_app.command("show")
@handle_errors
def show_cmd(
    run: str = typer.Argument(..., help=output.RUN_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
    store_path: str = typer.Option(None, "--store", help=output.STORE_HELP),
) -> None:
    """Show everything about one run: info, params, metrics, tags and artifacts.

    Example: mlkit runs show 3f9a1c   (or by name: mlkit runs show lr0.003-w32)
    """
    # import budget: the core loads when the command runs, not for mlkit --help
    from mlkit.tracking.queries import run_detail

    store = output.open_store(store_path)
    detail = run_detail(store, run)
    slurm_cell = ""
    # import budget: the package holds names only; its backend loads only for a Slurm run
    from mlkit.backends.slurm import asks_slurm

    if asks_slurm(detail.run.data.tags, detail.run.info.status):
        # import budget: the Slurm backend loads only for a Slurm run
        from mlkit.backends.slurm.status import describe, reconcile

        result = reconcile(store, [detail.run])
        for warning in result.warnings:
            output.warn(warning)
        if result.runs[0] is not detail.run:
            detail = run_detail(store, detail.run.info.run_id)
        slurm_cell = describe(detail.run, result.views.get(detail.run.info.run_id))
    r = detail.run
    if as_json:
        doc = _run_json(r)
        doc["metrics"] = {k: output.to_jsonable(v) for k, v in detail.metrics.items()}
        doc["run_dir"] = str(detail.run_dir)
        doc["artifact_dir"] = str(detail.artifact_dir)
        doc["artifacts"] = output.to_jsonable(detail.artifacts)
        output.print_json(doc)
        return
    i = r.info
    info_rows = [
        ("run_id", i.run_id), ("name", i.run_name), ("experiment_id", i.experiment_id),
        ("status", i.status + ("" if i.lifecycle_stage == "active" else f" ({i.lifecycle_stage})")),
        ("start", fmt_time(i.start_time)), ("end", fmt_time(i.end_time)),
        ("duration", fmt_duration(i.start_time, i.end_time)), ("user", i.user_id),
        ("run_dir", str(detail.run_dir)), ("artifacts", str(detail.artifact_dir)),
    ]  # fmt: skip
    if slurm_cell:
        info_rows.insert(4, ("slurm job", slurm_cell))
    output.print_table(["field", "value"], info_rows, title="Run")
    if r.data.params:
        output.print_table(["param", "value"], sorted(r.data.params.items()), title="Params")
    if detail.metrics:
        rows = [(k, _fmt_value(m.latest), m.step, m.count) for k, m in sorted(detail.metrics.items())]
        output.print_table(["metric", "latest", "step", "values"], rows, title="Metrics")
    if r.data.tags:
        output.print_table(["tag", "value"], sorted(r.data.tags.items()), title="Tags")
    if detail.artifacts:
        output.print_table(
            ["artifact", "bytes"], [(a.path, a.file_size) for a in detail.artifacts], title="Artifacts"
        )


@runs_app.command("logs")
@handle_errors
def logs_cmd(
    run: str = typer.Argument(..., help=output.RUN_HELP),
    follow: bool = typer.Option(False, "--follow", "-F", help="Keep printing until the run ends."),
    interval: float = typer.Option(
        0.5, "--interval", help="Seconds between checks with --follow.", hidden=True
    ),
    store_path: str = typer.Option(None, "--store", help=output.STORE_HELP),
) -> None:
    """Print a run's output log (artifacts/logs/output.log); --follow tails it while it runs.

    Example: mlkit runs logs 3f9a1c --follow
    """
    # import budget: the core loads when the command runs, not for mlkit --help
    from mlkit.tracking.entities import RUNNING
    from mlkit.tracking.queries import log_path
    from mlkit.tracking.resolve import resolve_run

    store = output.open_store(store_path)
    run_id = resolve_run(store, run)
    # import budget: the package holds names only; its backend loads only to follow a Slurm run
    from mlkit.backends.slurm import asks_slurm

    if follow and asks_slurm((found := store.get_run(run_id)).data.tags, found.info.status):
        # import budget: the Slurm backend loads only to follow a Slurm run
        from mlkit.backends.slurm.submit import wait_for_end

        def write(chunk: bytes) -> None:
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()

        code = wait_for_end(
            store, run_id, on_output=write, notify=output.warn, interval=max(interval, 0.2) * 2
        )
        if code:
            raise typer.Exit(code)
        return
    path = log_path(store, run_id)
    out = sys.stdout.buffer
    offset = 0
    while True:
        running = store.get_run(run_id).info.status == RUNNING
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
        except FileNotFoundError:
            if not (follow and running) and _print_slurm_output(store, run_id):
                return
            if not (follow and running):
                raise NotFoundError(
                    f"run {run_id} has no log at {path}", hint="only runs started with `mlkit run` have one"
                ) from None
            chunk = b""
        if chunk:
            out.write(chunk)
            out.flush()
            offset += len(chunk)
        if not follow or not running:
            return
        time.sleep(interval)


@runs_app.command("cancel")
@handle_errors
def cancel_cmd(
    runs: list[str] = typer.Argument(
        ..., help="Run ids, unique id prefixes or unique run names (Slurm runs)."
    ),
    wait: float = typer.Option(15.0, "--wait", help="Seconds to wait for Slurm to confirm (0: do not wait)."),
    store_path: str = typer.Option(None, "--store", help=output.STORE_HELP),
) -> None:
    """Cancel Slurm runs (scancel their jobs); each ends KILLED with reason `cancelled`.

    Works from any host that sees the store and has the Slurm client.

    Example: mlkit runs cancel 3f9a1c
    """
    # import budget: the core loads when the command runs, not for mlkit --help
    from mlkit.backends.slurm.status import reconcile
    from mlkit.backends.slurm.submit import cancel_runs
    from mlkit.tracking.entities import TERMINAL_STATUSES
    from mlkit.tracking.resolve import resolve_runs

    store = output.open_store(store_path)
    run_ids = resolve_runs(store, runs)  # all resolve before any is cancelled
    cancelled = cancel_runs(store, run_ids, notify=output.info)
    if not cancelled:
        output.info("nothing to cancel: the runs' jobs already ended")
        return
    deadline = time.monotonic() + wait
    pending = [r for r, _ in cancelled]
    while pending:
        result = reconcile(store, [store.get_run(r) for r in pending])
        done = {r.info.run_id: r for r in result.runs if r.info.status in TERMINAL_STATUSES
                and "mlkit.slurm.final" in r.data.tags}  # fmt: skip
        for run_id, run in done.items():
            reason = run.data.tags.get("mlkit.failure_reason", "")
            output.info(f"cancelled run {run_id}: {run.info.status}" + (f" ({reason})" if reason else ""))
        pending = [r for r in pending if r not in done]
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    for run_id in pending:
        job = dict(cancelled)[run_id]
        output.info(f"cancel requested for run {run_id} (Slurm job {job}); Slurm has not confirmed yet")


def _print_slurm_output(store: Any, run_id: str) -> bool:
    """A Slurm run that never reached its supervisor has no output.log: show Slurm's own
    output file(s) (artifacts/slurm/slurm-<job>.out) instead. False when there are none."""
    found = sorted((store.artifact_dir(run_id) / "slurm").glob("slurm-*.out"))
    for path in found:
        output.info(f"(no output.log: Slurm's output of the job, {path.name})")
        sys.stdout.buffer.write(path.read_bytes())
    sys.stdout.buffer.flush()
    return bool(found)


def _each_run(runs: list[str], store_path: str | None, action: str) -> None:
    # import budget: the core loads when the command runs, not for mlkit --help
    from mlkit.tracking.resolve import resolve_runs

    store = output.open_store(store_path)
    run_ids = resolve_runs(store, runs)  # all resolve before any changes
    for run_id in run_ids:
        getattr(store, f"{action}_run")(run_id)
        output.info(f"{action}d run {run_id}" if action != "delete" else f"deleted run {run_id}")


@runs_app.command("delete")
@handle_errors
def delete_cmd(
    runs: list[str] = typer.Argument(..., help="Run ids, unique id prefixes or unique run names."),
    store_path: str = typer.Option(None, "--store", help=output.STORE_HELP),
) -> None:
    """Mark runs deleted (kept on disk until `mlkit gc`; `runs restore` undoes it).

    Example: mlkit runs delete 3f9a1c 77b2e0
    """
    _each_run(runs, store_path, "delete")


@runs_app.command("restore")
@handle_errors
def restore_cmd(
    runs: list[str] = typer.Argument(..., help="Run ids, unique id prefixes or unique run names."),
    store_path: str = typer.Option(None, "--store", help=output.STORE_HELP),
) -> None:
    """Restore deleted runs.

    Example: mlkit runs restore 3f9a1c
    """
    _each_run(runs, store_path, "restore")
