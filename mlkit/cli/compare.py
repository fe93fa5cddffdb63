"""`mlkit runs compare`: params and latest metrics side by side, and metric curves in the terminal."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

import typer

from mlkit.cli.output import (
    STORE_HELP,
    handle_errors,
    info,
    open_store,
    out,
    print_csv,
    print_json,
    print_table,
    to_jsonable,
    warn,
)
from mlkit.errors import UsageError

PALETTE = ("cyan", "magenta", "yellow", "green", "red", "blue", "bright_white", "bright_red")


def finite(obj: Any) -> Any:
    """NaN and infinities as null, so --json stays strict JSON (json.loads, jq, JavaScript)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite(v) for v in obj]
    return obj


def print_rows(columns: list[str], rows: Sequence[Sequence[str]], title: str | None = None) -> None:
    """A table: rich on a terminal, with every cell as literal text (a run may be named '[/x]');
    tab-separated plain lines otherwise (`output.print_table`)."""
    if not sys.stdout.isatty():
        print_table(columns, rows, title=title)
        return
    # import budget: rich loads only when a table is rendered
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, header_style="bold")
    for column in columns:
        table.add_column(Text(column), overflow="fold")
    for row in rows:
        table.add_row(*(Text(value) for value in row))
    out.print(table)


def cell(value: object) -> str:
    """A table cell: floats to 6 significant digits, missing values as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


@handle_errors
def compare(
    runs: list[str] = typer.Argument(
        ..., metavar="RUN RUN [RUN...]", help="Run ids, unique id prefixes or unique run names."
    ),
    only_changed: bool = typer.Option(
        False, "--only-changed", help="Hide params and metrics equal in every run."
    ),
    metric: list[str] = typer.Option(
        [], "--metric", "-m", metavar="KEY", help="Draw this metric's curves, step on x (repeatable)."
    ),
    system: bool = typer.Option(False, "--system", help="Include system/* metrics in the table."),
    columns: list[str] = typer.Option(
        [],
        "--columns",
        "-c",
        metavar="NAMES",
        help="Rows to show, as `runs list --columns`: params.lr, metrics.val_*, tags.KEY, a bare key or glob.",
    ),
    csv_out: bool = typer.Option(False, "--csv", help="The table as CSV on stdout (one column per run id)."),
    json_out: bool = typer.Option(False, "--json", help="One JSON document on stdout (curves included)."),
    width: int = typer.Option(
        0, "--width", help="Chart width in characters (default: fit the terminal, else 60)."
    ),
    store: str | None = typer.Option(None, "--store", metavar="DIR", help=STORE_HELP),
) -> None:
    """Compare runs: params and latest metrics in one column per run.

    Example: mlkit runs compare 1a2b3c 4d5e6f lr0.003-w32 --only-changed --metric val_accuracy
    """
    # import budget: the core loads when the command runs, not for mlkit --help
    from mlkit.report.compare import compare_runs
    from mlkit.tracking.columns import split_names

    if csv_out and json_out:
        raise UsageError("--csv and --json exclude each other", hint="pick one output format")
    result = compare_runs(
        open_store(store), runs, only_changed=only_changed, system=system, curve_metrics=metric,
        columns=split_names(columns),
    )  # fmt: skip
    for unknown in result.unknown_metrics:  # a name no run logged: said, its chart left out
        warn(f"{unknown}" if unknown.suggestions else f"{unknown}; see `mlkit runs show RUN` for the metrics")
    if json_out:
        print_json(finite(to_jsonable(result)))
        if result.only_changed and result.hidden_rows:
            info(f"{result.hidden_rows} row(s) equal in every run hidden (--only-changed).")
        return
    if csv_out:
        if metric:
            info("--csv writes the table only; use --json for the curves' data.")
        print_csv(["key", *[c.run_id for c in result.runs]], ([row.name, *row.values] for row in result.rows))
        return
    print_rows(
        ["key", *[c.label for c in result.runs]],
        [[row.name, *[cell(v) for v in row.values]] for row in result.rows],
    )
    if result.only_changed and result.hidden_rows:
        info(f"{result.hidden_rows} row(s) equal in every run hidden (--only-changed).")
    for curves in result.curves:
        _draw(curves, width)
    if metric and not result.curves:
        names = ", ".join(u.name.removeprefix("metrics.") for u in result.unknown_metrics)
        sys.stdout.write(f"\n(no chart: none of these runs logged {names})\n")


def _draw(curves, width: int) -> None:
    # import budget: the chart renderer loads only when curves are drawn
    from mlkit.report.termchart import Series, render_chart

    colour = out.is_terminal and out.color_system is not None
    if not width:
        width = max(20, min(100, out.width - 14)) if out.is_terminal else 60
    series = [Series(s.label, list(zip(curves.xs(s), s.values, strict=True))) for s in curves.series]
    chart = render_chart(series, width=width, height=12, braille=colour, title=curves.key, x_label=curves.x)
    if not colour:
        sys.stdout.write("\n" + chart.plain() + "\n")
        return
    # import budget: rich loads only when a chart is drawn
    from rich.text import Text

    out.print()
    for line in chart.lines:
        text = Text()
        for part, index in line:
            text.append(part, style=None if index is None else PALETTE[index % len(PALETTE)])
        out.print(text, soft_wrap=True)


def register(app: typer.Typer) -> None:
    try:
        # import budget: `mlkit runs` is built only when its command group is registered
        from mlkit.cli.runs import runs_app
    except ModuleNotFoundError as exc:  # `mlkit runs` not built yet
        if exc.name != "mlkit.cli.runs":
            raise
        return
    runs_app.command("compare")(compare)
