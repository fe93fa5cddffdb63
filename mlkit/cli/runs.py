"""`mlkit runs`: list, show, follow the log of, delete and restore tracked runs."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from typing import Any

import typer

from mlkit.cli import output
from mlkit.cli.output import handle_errors

runs_app = output.command_group("runs", "List, show, follow and delete tracked runs.")


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


@runs_app.command("list")
@handle_errors
def list_cmd(
    experiment: list[str] = typer.Option(
        None, "--experiment", "-x", help="Experiment name or id (repeatable)."
    ),
    filter_string: str = typer.Option("", "--filter", "-f", help='MLflow filter, e.g. "metrics.acc > 0.9".'),
    order_by: list[str] = typer.Option(
        None, "--order-by", "-o", help="e.g. 'metrics.loss ASC' (repeatable)."
    ),
    max_results: int = typer.Option(100, "--max", "-n", help="At most this many runs."),
    since: str = typer.Option(None, "--since", help="Only runs started in this window: 30m, 12h, 1d, 2w."),
    status: str = typer.Option(None, "--status", help="Only runs with this status, e.g. FAILED."),
    include_deleted: bool = typer.Option(False, "--all", help="Include deleted runs and experiments."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
    as_csv: bool = typer.Option(False, "--csv", help="Print CSV."),
    store_path: str = typer.Option(None, "--store", help=output.STORE_HELP),
) -> None:
    """List runs, newest first, with params and latest metrics.

    Example: mlkit runs list -x cnn --filter "metrics.acc > 0.9" --order-by "metrics.acc DESC"
    """
    from mlkit.tracking.queries import list_runs

    store = output.open_store(store_path)
    runs = list_runs(
        store, experiments=experiment or None, filter_string=filter_string, order_by=order_by or None,
        max_results=max_results, since=since, status=status, include_deleted=include_deleted,
    )  # fmt: skip
    if as_json:
        output.print_json([_run_json(r) for r in runs])
        return
    param_keys = sorted({k for r in runs for k in r.data.params})
    metric_keys = sorted({k for r in runs for k in r.data.metrics})
    short = not as_csv and sys.stdout.isatty()
    hidden = 0
    if short:  # a person reads this: the params that tell runs apart and the model's own metrics
        shown_params = [k for k in param_keys if len({r.data.params.get(k) for r in runs}) > 1]
        shown_metrics = [k for k in metric_keys if not k.startswith("system/")]
        shown_metrics.sort(
            key=lambda k: not k.startswith(("val", "test", "eval"))
        )  # the ones to compare first
        hidden = len(param_keys) + len(metric_keys) - len(shown_params) - len(shown_metrics)
        param_keys, metric_keys = shown_params, shown_metrics
    columns = ["run_id", "name", "status", "start", "duration"]
    columns += [f"params.{k}" for k in param_keys] + [f"metrics.{k}" for k in metric_keys]
    rows = []
    for r in runs:
        i = r.info
        row = [i.run_id[:8] if short else i.run_id, i.run_name, i.status, fmt_time(i.start_time),
               fmt_duration(i.start_time, i.end_time)]  # fmt: skip
        row += [r.data.params.get(k) for k in param_keys]
        row += [_fmt_value(r.data.metrics[k]) if k in r.data.metrics else None for k in metric_keys]
        rows.append(row)
    if as_csv:
        output.print_csv(columns, rows)
    else:
        if short:
            columns, rows, cut = _fit_width(columns, rows, output.out.width)
            hidden += cut
        output.print_table(columns, rows)
        if not runs:
            output.info("No runs match.")
        elif hidden:
            output.info(f"({hidden} more columns: params equal in every run, system metrics, or past the "
                        "terminal's width; see `mlkit runs show RUN`, --csv or --json)")  # fmt: skip


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
    run: str = typer.Argument(..., help="Run id, or a unique prefix of at least 6 characters."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
    store_path: str = typer.Option(None, "--store", help=output.STORE_HELP),
) -> None:
    """Show everything about one run: info, params, metrics, tags and artifacts.

    Example: mlkit runs show 3f9a1c
    """
    from mlkit.tracking.queries import run_detail

    detail = run_detail(output.open_store(store_path), run)
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
    run: str = typer.Argument(..., help="Run id, or a unique prefix of at least 6 characters."),
    follow: bool = typer.Option(False, "--follow", "-F", help="Keep printing until the run ends."),
    interval: float = typer.Option(
        0.5, "--interval", help="Seconds between checks with --follow.", hidden=True
    ),
    store_path: str = typer.Option(None, "--store", help=output.STORE_HELP),
) -> None:
    """Print a run's output log (artifacts/logs/output.log); --follow tails it while it runs.

    Example: mlkit runs logs 3f9a1c --follow
    """
    from mlkit.errors import NotFoundError
    from mlkit.tracking.entities import RUNNING
    from mlkit.tracking.queries import log_path

    store = output.open_store(store_path)
    run_id = store.resolve_run_id(run)
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


def _each_run(runs: list[str], store_path: str | None, action: str) -> None:
    store = output.open_store(store_path)
    run_ids = [store.resolve_run_id(r) for r in runs]  # all resolve before any changes
    for run_id in run_ids:
        getattr(store, f"{action}_run")(run_id)
        output.info(f"{action}d run {run_id}" if action != "delete" else f"deleted run {run_id}")


@runs_app.command("delete")
@handle_errors
def delete_cmd(
    runs: list[str] = typer.Argument(..., help="Run ids or unique prefixes."),
    store_path: str = typer.Option(None, "--store", help=output.STORE_HELP),
) -> None:
    """Mark runs deleted (kept on disk until `mlkit gc`; `runs restore` undoes it).

    Example: mlkit runs delete 3f9a1c 77b2e0
    """
    _each_run(runs, store_path, "delete")


@runs_app.command("restore")
@handle_errors
def restore_cmd(
    runs: list[str] = typer.Argument(..., help="Run ids or unique prefixes."),
    store_path: str = typer.Option(None, "--store", help=output.STORE_HELP),
) -> None:
    """Restore deleted runs.

    Example: mlkit runs restore 3f9a1c
    """
    _each_run(runs, store_path, "restore")
