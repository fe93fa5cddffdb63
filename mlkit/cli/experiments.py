"""`mlkit experiments`: list, create, delete and restore experiments."""

from __future__ import annotations

from typing import Any

import typer

from mlkit.cli import output
from mlkit.cli.output import handle_errors

experiments_app = output.command_group("experiments", "Example: mlkit experiments create sweep-lr")


def register(app: typer.Typer) -> None:
    """Add `mlkit experiments` to the root app."""
    app.add_typer(experiments_app, name="experiments")


@experiments_app.command("list")
@handle_errors
def list_cmd(
    include_deleted: bool = typer.Option(False, "--all", help="Include deleted experiments."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
    store_path: str = typer.Option(None, "--store", help=output.STORE_HELP),
) -> None:
    """List experiments, newest first, with their number of runs.

    Example: mlkit experiments list --json
    """
    # import budget: the runs command module loads only when experiments are listed
    from mlkit.cli.runs import fmt_time

    store = output.open_store(store_path)
    experiments = store.list_experiments("all" if include_deleted else "active")
    counts = {e.experiment_id: store.count_runs(e.experiment_id) for e in experiments}
    if as_json:
        output.print_json([{**output.to_jsonable(e), "runs": counts[e.experiment_id]} for e in experiments])
        return
    rows = [(e.experiment_id, e.name, e.lifecycle_stage, counts[e.experiment_id], fmt_time(e.creation_time))
            for e in experiments]  # fmt: skip
    output.print_table(["experiment_id", "name", "stage", "runs", "created"], rows)


@experiments_app.command("create")
@handle_errors
def create_cmd(
    name: str = typer.Argument(..., help="Name of the new experiment."),
    artifact_location: str = typer.Option(None, "--artifact-location", help="Where its runs keep artifacts."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
    store_path: str = typer.Option(None, "--store", help=output.STORE_HELP),
) -> None:
    """Create an experiment and print its id.

    Example: mlkit experiments create cnn-sweep
    """
    experiment_id = output.open_store(store_path, create=True).create_experiment(name, artifact_location)
    if as_json:
        output.print_json({"experiment_id": experiment_id, "name": name})
    else:
        output.out.print(experiment_id, markup=False)


def _resolve(store: Any, ref: str) -> Any:
    # import budget: the core loads when the command runs, not for mlkit --help
    from mlkit.tracking.queries import resolve_experiment

    return resolve_experiment(store, ref)


@experiments_app.command("delete")
@handle_errors
def delete_cmd(
    experiment: str = typer.Argument(..., help="Experiment name or id."),
    store_path: str = typer.Option(None, "--store", help=output.STORE_HELP),
) -> None:
    """Delete an experiment and its runs (moved to .trash; `experiments restore` undoes it).

    Example: mlkit experiments delete cnn-sweep
    """
    store = output.open_store(store_path)
    exp = _resolve(store, experiment)
    store.delete_experiment(exp.experiment_id)
    output.info(f"deleted experiment {exp.experiment_id} ({exp.name})")


@experiments_app.command("restore")
@handle_errors
def restore_cmd(
    experiment: str = typer.Argument(..., help="Experiment name or id."),
    store_path: str = typer.Option(None, "--store", help=output.STORE_HELP),
) -> None:
    """Restore a deleted experiment and its runs.

    Example: mlkit experiments restore cnn-sweep
    """
    store = output.open_store(store_path)
    exp = _resolve(store, experiment)
    store.restore_experiment(exp.experiment_id)
    output.info(f"restored experiment {exp.experiment_id} ({exp.name})")
