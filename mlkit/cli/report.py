"""`mlkit report`: one self-contained HTML file about an experiment's runs."""

from __future__ import annotations

from pathlib import Path

import typer

from mlkit.cli import toplevel
from mlkit.cli.output import STORE_HELP, handle_errors, info, open_store, out, print_json
from mlkit.errors import UsageError


@handle_errors
def report(
    experiment: str = typer.Option(
        ..., "--experiment", "-e", metavar="NAME|ID", help="The experiment to report on."
    ),
    output: Path = typer.Option(Path("report.html"), "--output", "-o", help="The HTML file to write."),
    runs: list[str] = typer.Option(
        [], "--runs", "-r", metavar="RUN", help="Only these runs (id, id prefix or name; repeatable)."
    ),
    max_runs: int = typer.Option(50, "--max-runs", help="At most this many runs, newest first."),
    max_image_mb: float = typer.Option(
        20.0, "--max-image-mb", help="Total size of the images inlined, in MiB."
    ),
    max_images_per_run: int = typer.Option(
        8, "--max-images-per-run", help="Show the last N images of each run."
    ),
    max_points: int = typer.Option(500, "--max-points", help="Thin each curve to at most this many points."),
    x_axis: str = typer.Option(
        "step", "--x", metavar="step|epoch|time", help="The metric charts' x axis when the page opens."
    ),
    log_y: bool = typer.Option(False, "--log-y", help="Open with a log-scale y axis."),
    smoothing: float = typer.Option(0.0, "--smoothing", help="Open with this EMA smoothing (0 to 0.99)."),
    json_out: bool = typer.Option(False, "--json", help="One JSON document on stdout describing the report."),
    store: str | None = typer.Option(None, "--store", metavar="DIR", help=STORE_HELP),
) -> None:
    """The table puts the params that differ across the runs first. Curves switch between step, epoch
    and time, log scale and smoothing in the page; system metrics are drawn against wall time.
    Each run's name links to its section: params, tags, artifacts, log tail and model URI.
    The file is self-contained (no network): open it in any browser, mail it, archive it.

    Example: mlkit report --experiment cnn-sweep -o report.html --max-runs 20
    """
    # import budget: the core loads when the command runs, not for mlkit --help
    from mlkit.report.collect import ReportOptions
    from mlkit.report.html import build_report

    if max_points < 2:
        raise UsageError(f"--max-points {max_points}: must be at least 2", hint="e.g. --max-points 500")
    if max_image_mb < 0:
        raise UsageError("--max-image-mb must not be negative", hint="0 leaves all images out")
    options = ReportOptions(
        run_refs=[r for chunk in runs for r in chunk.split(",") if r] or None,
        max_runs=max_runs,
        max_image_bytes=int(max_image_mb * 1024 * 1024),
        max_images_per_run=max_images_per_run,
        max_points=max_points,
        x_axis=x_axis,
        log_y=log_y,
        smoothing=smoothing,
    )
    result = build_report(open_store(store), experiment, output, options)
    if result.skipped_images:
        info(f"{len(result.skipped_images)} image(s) not inlined (listed at the end of the report).")
    if result.runs_total > len(result.runs) and not runs:
        info(f"Showing the newest {len(result.runs)} of {result.runs_total} runs (--max-runs).")
    if json_out:
        print_json(result)
        return
    out.print(
        f"Wrote {result.path} ({result.bytes} bytes): {len(result.runs)} run(s), "
        f"{len(result.metrics)} metric chart(s), {len(result.system_metrics)} system metric chart(s), "
        f"{len(result.images)} image(s).",
        markup=False,
    )


def register(app: typer.Typer) -> None:
    # its help: the summary declared in mlkit.cli.toplevel, then the docstring
    app.command("report", help=toplevel.help_text("report", report.__doc__))(report)
