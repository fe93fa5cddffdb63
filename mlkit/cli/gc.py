"""`mlkit gc`: remove deleted runs, runs outside the retention rules, and orphaned artifacts."""

from __future__ import annotations

import typer

from mlkit.cli import toplevel
from mlkit.cli.compare import print_rows
from mlkit.cli.output import STORE_HELP, handle_errors, human_bytes, info, open_store, out, print_json, warn
from mlkit.errors import UsageError


@handle_errors
def gc(
    older_than: str | None = typer.Option(
        None, "--older-than", metavar="AGE", help="Keep ended runs newer than AGE (e.g. 30d, 12h, 1d12h)."
    ),
    keep_last: int | None = typer.Option(
        None, "--keep-last", metavar="N", help="Keep the last N ended runs of each experiment."
    ),
    keep_best: int | None = typer.Option(
        None, "--keep-best", metavar="K", help="Keep the best K ended runs by --metric (with --min or --max)."
    ),
    metric: str | None = typer.Option(
        None, "--metric", metavar="KEY", help="Metric for --keep-best (its latest value)."
    ),
    minimize: bool = typer.Option(False, "--min", help="Lower --metric is better (a loss)."),
    maximize: bool = typer.Option(False, "--max", help="Higher --metric is better (an accuracy)."),
    status: list[str] = typer.Option(
        [],
        "--status",
        help="Apply retention only to runs with this status (repeatable): FINISHED, FAILED, KILLED.",
    ),
    experiment: list[str] = typer.Option(
        [],
        "--experiment",
        "-e",
        metavar="NAME|ID",
        help="Only this experiment, by name or id (repeatable). Default: all.",
    ),
    deleted: bool = typer.Option(True, "--deleted/--no-deleted", help="Remove deleted runs and experiments."),
    orphans: bool = typer.Option(
        True, "--orphans/--no-orphans", help="Remove orphaned artifact directories."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", "-n", help="List what would go, with sizes; delete nothing."
    ),
    json_out: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
    store: str | None = typer.Option(None, "--store", metavar="DIR", help=STORE_HELP),
) -> None:
    """An ended run is kept if it is among the last N (--keep-last), or the best K by a metric
    (--keep-best), or ended less than AGE ago (--older-than); with no rule, only deleted runs
    and orphans go. Running runs, registered model versions' runs and runs holding a GPU lease
    are never removed. Stale RUNNING runs are marked FAILED (lost) first.

    Example: mlkit gc --keep-last 20 --keep-best 5 --metric val_loss --min --older-than 30d --dry-run
    """
    # import budget: the core loads when the command runs, not for mlkit --help
    from mlkit.tracking.gc import parse_duration, run_gc
    from mlkit.tracking.retention import ENDED_STATUSES, RetentionPolicy

    if minimize and maximize:
        raise UsageError("--min and --max exclude each other", hint="pick the one that means 'better'")
    statuses = tuple(s.upper() for s in status) or ENDED_STATUSES
    policy = RetentionPolicy(
        older_than=parse_duration(older_than) if older_than is not None else None,
        keep_last=keep_last,
        keep_best=keep_best,
        metric=metric,
        mode="min" if minimize else "max" if maximize else None,
        statuses=statuses,
    )
    if metric and keep_best is None:
        raise UsageError("--metric is only used with --keep-best", hint="add --keep-best K, or drop --metric")
    result = run_gc(
        open_store(store),
        policy,
        experiments=experiment or None,
        deleted=deleted,
        orphans=orphans,
        dry_run=dry_run,
    )
    if result.marked_lost:
        info(
            f"Marked {len(result.marked_lost)} stale RUNNING run(s) FAILED (lost): {', '.join(result.marked_lost)}"
        )
    if result.unknown_metric is not None:  # only a dry run gets here with one (run_gc refuses)
        warn(f"{result.unknown_metric} (--keep-best would keep no run by it; without --dry-run gc refuses)")
    for line in result.skipped:
        info(f"Skipped (changed since planned): {line}")
    for line in result.errors:
        info(f"Could not remove: {line}")
    if json_out:
        print_json(result)
    else:
        _table(result)
    for p in result.protected:
        info(f"Protected {p.run_id[:12]} {p.run_name}: {p.reason} (matched: {p.would_be})")
    if result.policy.startswith("no retention rule"):
        info(f"Rule: {result.policy}.")
    else:
        info(f"Rule: {result.policy}; {result.kept} ended run(s) kept by it.")
    count = sum(1 for i in result.items if result.dry_run or i.removed)
    total = f"{human_bytes(result.bytes_freed)} ({result.bytes_freed} bytes on disk)"
    if result.dry_run:
        summary = f"Dry run: {count} item(s) would be removed, freeing {total}. Nothing was deleted."
    else:
        summary = f"Removed {count} item(s), freed {total}."
    if json_out:
        info(summary)
    else:
        out.print(summary, markup=False)
    if result.errors:
        raise typer.Exit(1)


def _table(result) -> None:
    items = [i for i in result.items if result.dry_run or i.removed]
    if not items:
        return
    rows = [
        (
            i.kind,
            (i.run_id or i.experiment_id or "")[:12],
            i.run_name or "",
            i.reason,
            human_bytes(i.bytes),
            i.path,
        )
        for i in items
    ]
    title = f"{'Would remove' if result.dry_run else 'Removed'} ({len(items)})"
    print_rows(["kind", "id", "name", "reason", "size", "path"], rows, title=title)


def register(app: typer.Typer) -> None:
    # its help: the summary declared in mlkit.cli.toplevel, then the docstring
    app.command("gc", help=toplevel.help_text("gc", gc.__doc__))(gc)
