"""`mlkit models ...`: the model registry (MLflow's registry layout under <store>/models/)."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import typer

from mlkit.cli import output
from mlkit.cli.output import handle_errors, info, out, print_json, print_table
from mlkit.errors import ExitCode, UsageError

models_app = output.command_group("models", "Example: mlkit models register runs:/<run-id>/model cnn")


def register(app: typer.Typer) -> None:
    """Add the `models` group to the root app."""
    app.add_typer(models_app, name="models")


def _registry(store: Path | None) -> Any:
    # import budget: the core loads when the command runs, not for mlkit --help
    from mlkit.tracking.registry import RegistryStore

    return RegistryStore(store)


def _when(ms: int | None) -> str:
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _key_metrics(metrics: dict[str, float], limit: int = 4) -> str:
    keys = sorted(k for k in metrics if not k.startswith("system/"))
    preferred = [k for k in keys if k.startswith(("val", "test"))] + [
        k for k in keys if not k.startswith(("val", "test"))
    ]
    return " ".join(f"{k}={metrics[k]:.4g}" for k in preferred[:limit])


def _parse_tags(tags: list[str] | None) -> dict[str, str]:
    parsed = {}
    for item in tags or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--tag {item!r}: expected KEY=VALUE", hint="e.g. --tag team=vision")
        parsed[key] = value
    return parsed


@models_app.command("register")
@handle_errors
def register_cmd(
    uri: str = typer.Argument(..., help="runs:/RUN_ID/model, models:/NAME/VERSION, or a model directory."),
    name: str = typer.Argument(..., help="Registered model name (created when missing)."),
    description: str | None = typer.Option(None, "--description", "-d", help="Version description."),
    tag: list[str] | None = typer.Option(None, "--tag", help="KEY=VALUE version tag (repeatable)."),
    if_new: bool = typer.Option(
        False, "--if-new", help="When a version already holds this run's model, reuse it: register nothing."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the new version as JSON."),
    store: Path | None = typer.Option(None, "--store", help=output.STORE_HELP),
) -> None:
    """Register a logged model as the next version of NAME; prints the version number.

    Registering a model that a version already holds makes a new version, with a warning;
    --if-new prints the existing version instead.

    Example: mlkit models register runs:/3f2a.../model cnn --if-new
    """
    # import budget: the core loads when the command runs, not for mlkit --help
    from mlkit.models.ops import register

    done = register(uri, name, if_new=if_new, tags=_parse_tags(tag), description=description, root=store)
    version = done.version
    earlier = ", ".join(str(n) for n in done.same_source)
    if not done.created:
        info(f"{uri} is already version {earlier} of {name}; nothing registered (--if-new)")
    elif done.same_source:
        info(
            f"Warning: {uri} is already version {earlier} of {name}; registered it again as version "
            f"{version.version} (--if-new reuses the existing version)"
        )
    if json_out:
        print_json(version)
        return
    if done.created:
        info(f"Registered {name} version {version.version} from {version.source}")
    out.print(str(version.version), markup=False)


@models_app.command("list")
@handle_errors
def list_cmd(
    json_out: bool = typer.Option(False, "--json", help="Print the models as JSON."),
    store: Path | None = typer.Option(None, "--store", help=output.STORE_HELP),
) -> None:
    """List registered models with their latest versions, stages and aliases.

    Example: mlkit models list --json
    """
    registry = _registry(store)
    models = registry.list_registered_models()
    if json_out:
        print_json(models)
        return
    rows = []
    for model in models:
        versions = registry.list_model_versions(model.name)
        stages = ", ".join(
            f"{v.current_stage}:v{v.version}" for v in model.latest_versions if v.current_stage != "None"
        )
        aliases = ", ".join(f"{a}:v{v}" for a, v in sorted(model.aliases.items()))
        latest = max((v.version for v in versions), default=None)
        rows.append(
            [
                model.name,
                len(versions),
                latest and f"v{latest}",
                stages,
                aliases,
                _when(model.last_updated_timestamp),
            ]
        )
    if not rows:
        info("No registered models. Register one with `mlkit models register runs:/RUN_ID/model NAME`.")
        return
    print_table(["name", "versions", "latest", "stages", "aliases", "updated"], rows)


@models_app.command("show")
@handle_errors
def show_cmd(
    name: str = typer.Argument(..., help="Registered model name."),
    json_out: bool = typer.Option(False, "--json", help="Print the model, versions and source runs as JSON."),
    store: Path | None = typer.Option(None, "--store", help=output.STORE_HELP),
) -> None:
    """Show a model's versions, stages, aliases and each source run's key metrics.

    Example: mlkit models show cnn
    """
    # import budget: the core loads when the command runs, not for mlkit --help
    from mlkit.models.ops import model_overview

    overview = model_overview(name, root=store)
    if json_out:
        print_json(overview)
        return
    model = overview.model
    info(f"{model.name}: {len(overview.versions)} version(s), updated {_when(model.last_updated_timestamp)}")
    if model.description:
        info(f"  description: {model.description}")
    if model.tags:
        info("  tags: " + ", ".join(f"{k}={v}" for k, v in sorted(model.tags.items())))
    rows = []
    for item in overview.versions:
        v = item.version
        rows.append(
            [
                v.version,
                v.current_stage,
                ",".join(v.aliases),
                (v.run_id or "")[:12],
                item.run_name or "",
                _key_metrics(item.metrics),
                _when(v.creation_timestamp),
            ]
        )
    print_table(["version", "stage", "aliases", "run", "run name", "metrics", "created"], rows)


@models_app.command("transition")
@handle_errors
def transition_cmd(
    name: str = typer.Argument(..., help="Registered model name."),
    version: str = typer.Argument(..., help="Version number."),
    stage: str = typer.Argument(..., help="None, Staging, Production or Archived (any case)."),
    archive_existing: bool = typer.Option(
        False,
        "--archive-existing",
        help="Move the stage's other versions to Archived (Staging/Production only).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the version as JSON."),
    store: Path | None = typer.Option(None, "--store", help=output.STORE_HELP),
) -> None:
    """Move a version to a stage.

    Example: mlkit models transition cnn 3 Production --archive-existing
    """
    result = _registry(store).transition_model_version_stage(
        name, version, stage, archive_existing=archive_existing
    )
    if json_out:
        print_json(result)
        return
    info(f"{name} version {result.version} is now in {result.current_stage}")


@models_app.command("alias")
@handle_errors
def alias_cmd(
    name: str = typer.Argument(..., help="Registered model name."),
    alias: str = typer.Argument(..., help="Alias, e.g. champion."),
    version: str | None = typer.Argument(None, help="Version the alias should point at."),
    delete: bool = typer.Option(False, "--delete", help="Remove the alias instead."),
    store: Path | None = typer.Option(None, "--store", help=output.STORE_HELP),
) -> None:
    """Point an alias at a version (or remove it with --delete).

    Example: mlkit models alias cnn champion 3
    """
    registry = _registry(store)
    if delete:
        if version is not None:
            raise UsageError("--delete takes no VERSION", hint=f"mlkit models alias {name} {alias} --delete")
        registry.delete_alias(name, alias)
        info(f"Removed alias {alias} of {name}")
        return
    if version is None:
        raise UsageError("missing VERSION", hint=f"mlkit models alias {name} {alias} VERSION (or --delete)")
    result = registry.set_alias(name, alias, version)
    info(f"{name}@{alias} -> version {result.version}")


@models_app.command("tag")
@handle_errors
def tag_cmd(
    name: str = typer.Argument(..., help="Registered model name."),
    key: str = typer.Argument(..., help="Tag key."),
    value: str | None = typer.Argument(None, help="Tag value (omit with --delete)."),
    version: str | None = typer.Option(
        None, "--version", "-v", help="Tag this version instead of the model."
    ),
    delete: bool = typer.Option(False, "--delete", help="Remove the tag."),
    store: Path | None = typer.Option(None, "--store", help=output.STORE_HELP),
) -> None:
    """Set (or --delete) a tag on a model or one of its versions.

    Example: mlkit models tag cnn team vision --version 3
    """
    registry = _registry(store)
    if delete:
        if version is None:
            registry.delete_registered_model_tag(name, key)
        else:
            registry.delete_model_version_tag(name, version, key)
        info(f"Removed tag {key}")
        return
    if value is None:
        raise UsageError("missing VALUE", hint=f"mlkit models tag {name} {key} VALUE (or --delete)")
    if version is None:
        registry.set_registered_model_tag(name, key, value)
    else:
        registry.set_model_version_tag(name, version, key, value)
    info(f"Set tag {key}={value}")


@models_app.command("describe")
@handle_errors
def describe_cmd(
    name: str = typer.Argument(..., help="Registered model name."),
    description: str = typer.Argument(..., help="New description ('' clears it)."),
    version: str | None = typer.Option(
        None, "--version", "-v", help="Describe this version instead of the model."
    ),
    store: Path | None = typer.Option(None, "--store", help=output.STORE_HELP),
) -> None:
    """Set the description of a model or a version.

    Example: mlkit models describe cnn "ResNet-ish CIFAR-10 classifier"
    """
    registry = _registry(store)
    text = description or None
    if version is None:
        registry.update_registered_model(name, text)
    else:
        registry.update_model_version(name, version, text)
    info("Description updated")


@models_app.command("promote")
@handle_errors
def promote_cmd(
    name: str = typer.Argument(..., help="Registered model name."),
    from_run: str = typer.Option(
        ..., "--from-run", help="Run whose model is the candidate (id, unique 6+ char prefix or unique name)."
    ),
    if_better: str = typer.Option(
        ...,
        "--if-better",
        help="Condition, e.g. 'metrics.val_accuracy > champion' or 'metrics.val_loss < Production'.",
    ),
    alias: str | None = typer.Option(
        None, "--alias", help="Alias to move (default: the condition's reference)."
    ),
    stage: str | None = typer.Option(
        None, "--stage", help="Stage to move the candidate to instead of an alias."
    ),
    artifact_path: str = typer.Option("model", "--artifact-path", help="Where the run logged its model."),
    json_out: bool = typer.Option(False, "--json", help="Print the decision as JSON."),
    store: Path | None = typer.Option(None, "--store", help=output.STORE_HELP),
) -> None:
    """Promote a run's model if it beats the current holder; exit 0 promoted, 3 kept.

    Example (cron): mlkit models promote cnn --from-run $RUN --if-better 'metrics.val_accuracy > champion'
    """
    # import budget: the core loads when the command runs, not for mlkit --help
    from mlkit.models.promote import promote

    result = promote(
        name,
        from_run=from_run,
        if_better=if_better,
        alias=alias,
        stage=stage,
        artifact_path=artifact_path,
        root=store,
    )
    if json_out:
        print_json(result)
    elif result.promoted:
        info(f"Promoted {name} version {result.version} to {result.target}: {result.reason}")
    else:
        info(f"Kept {result.target} of {name}: {result.reason}")
    if not result.promoted:
        raise typer.Exit(int(ExitCode.PROMOTE_KEPT))


@models_app.command("history")
@handle_errors
def history_cmd(
    name: str = typer.Argument(..., help="Registered model name."),
    json_out: bool = typer.Option(False, "--json", help="Print the entries as a JSON list."),
    store: Path | None = typer.Option(None, "--store", help=output.STORE_HELP),
) -> None:
    """Show the audit log of a model: who changed what, when, from what to what.

    Example: mlkit models history cnn
    """
    entries = _registry(store).history(name)
    if json_out:
        print_json([e.to_dict() for e in entries])
        return
    rows = []
    for e in entries:
        details = ", ".join(f"{k}={v}" for k, v in e.details.items())
        rows.append([e.when, e.who, e.what, e.version, e.from_, e.to, details])
    print_table(["when", "who", "what", "version", "from", "to", "details"], rows)


@models_app.command("delete")
@handle_errors
def delete_cmd(
    name: str = typer.Argument(..., help="Registered model name."),
    version: str | None = typer.Argument(None, help="Delete only this version (its number is never reused)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Delete without asking (needed without a terminal)."),
    store: Path | None = typer.Option(None, "--store", help=output.STORE_HELP),
) -> None:
    """Delete a model (all versions) or one version, after saying what goes. Runs and artifacts are kept.

    On a terminal it asks first; without one it refuses unless --yes is given.

    Example: mlkit models delete cnn 2 --yes
    """
    # import budget: the core loads when the command runs, not for mlkit --help
    from mlkit.models.ops import delete, deletion_impact

    impact = deletion_impact(name, version, root=store)
    if not yes:
        if not (sys.stdin.isatty() and sys.stderr.isatty()):
            raise UsageError(
                f"not deleting {impact.summary()}: no terminal to ask on",
                hint=f"add --yes to delete without asking: mlkit models delete {_quoted(name, version)} --yes",
            )
        info(f"This deletes {impact.summary()}. Runs and their artifacts are kept.")
        sys.stderr.write("Delete? [y/N] ")
        sys.stderr.flush()
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            info("Nothing deleted.")
            raise typer.Exit(int(ExitCode.FAILURE))
    delete(impact, root=store)
    info(f"Deleted {impact.summary()}")


def _quoted(name: str, version: str | None) -> str:
    # import budget: shlex loads only when a command line is shown
    import shlex

    return " ".join(shlex.quote(x) for x in (name, version) if x is not None)


@models_app.command("download")
@handle_errors
def download_cmd(
    uri: str = typer.Argument(
        ..., help="runs:/..., models:/NAME/VERSION|STAGE|latest or models:/NAME@ALIAS."
    ),
    output: Path = typer.Option(..., "--output", "-o", help="New directory to copy the model into."),
    store: Path | None = typer.Option(None, "--store", help=output.STORE_HELP),
) -> None:
    """Copy a model directory out of the store.

    Example: mlkit models download models:/cnn@champion -o ./cnn-model
    """
    # import budget: the core loads when the command runs, not for mlkit --help
    from mlkit.models.ops import download_model

    path = download_model(uri, output, root=store)
    info(f"Copied {uri} to {path}")
    out.print(str(path), markup=False)


@models_app.command("serve")
@handle_errors
def serve_cmd(
    uri: str = typer.Argument(
        ...,
        help="models:/NAME@ALIAS (followed as the alias moves), models:/NAME/STAGE, runs:/RUN/model, a path.",
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (0.0.0.0 serves other machines)."),
    port: int = typer.Option(5000, "--port", "-p", help="TCP port (0 picks a free one)."),
    gpus: str = typer.Option(
        "auto",
        "--gpus",
        help="N, 0,2, a UUID, none or auto (one free GPU, else the CPU); leased while it serves.",
    ),
    min_free_memory: str | None = typer.Option(
        None, "--min-free-memory", help="Only GPUs with this much free, e.g. 4GiB."
    ),
    workers: int = typer.Option(1, "--workers", "-w", help="Processes behind the one port: one per GPU."),
    max_batch_size: int = typer.Option(1, "--max-batch-size", help="Rows per forward pass; 1 = no batching."),
    max_batch_delay: str = typer.Option(
        "0", "--max-batch-delay", help="Longest wait for a batch to fill, e.g. 5ms."
    ),
    token_file: Path | None = typer.Option(
        None, "--token-file", help="Require 'Authorization: Bearer <the file's token>'."
    ),
    max_body: str = typer.Option("64MiB", "--max-body", help="Larger request bodies get 413."),
    timeout: str = typer.Option("60s", "--timeout", "-t", help="A request taking longer gets 504."),
    poll_interval: str = typer.Option(
        "1s", "--poll-interval", help="Registry re-check when no file event comes (NFS)."
    ),
    record_interval: str = typer.Option(
        "60s", "--record-interval", help="How often the serving run's metrics are logged."
    ),
    experiment_name: str | None = typer.Option(
        None, "--experiment-name", help="Experiment of the serving run (default: Default)."
    ),
    json_out: bool = typer.Option(
        False, "--json", help="Print one JSON line once serving (url, version, run id)."
    ),
    store: Path | None = typer.Option(None, "--store", help=output.STORE_HELP),
) -> None:
    """Serve a model over HTTP with MLflow's scoring protocol; moving the alias deploys a version.

    POST /invocations takes MLflow's payloads (inputs, instances, dataframe_split,
    dataframe_records, CSV); GET /ping, /health, /version, /v1/model and /metrics (Prometheus).
    The new version is loaded beside the old one, warmed with its input example and swapped in;
    one that fails stays out. On a GPU without room for both, the old one is unloaded first
    (a few seconds of 503). SIGTERM drains and exits 0.

    Example: mlkit models serve models:/cnn@champion --port 5000 --max-batch-size 64 --max-batch-delay 5ms
    """
    # import budget: the server loads when the command runs, not for mlkit --help
    import json
    import logging

    # the server core (and the web stack behind it)
    from mlkit.serve.server import ServeOptions, Started, serve
    from mlkit.units import parse_duration, parse_memory

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    options = ServeOptions(
        uri=uri,
        host=host,
        port=port,
        gpus=gpus,
        min_free_memory=min_free_memory,
        workers=workers,
        max_batch_size=max_batch_size,
        max_batch_delay=parse_duration(max_batch_delay, flag="--max-batch-delay"),
        token_file=str(token_file) if token_file else None,
        max_body=parse_memory(max_body, flag="--max-body"),
        timeout=parse_duration(timeout, flag="--timeout"),
        poll_interval=max(0.05, parse_duration(poll_interval, flag="--poll-interval")),
        record_interval=max(0.05, parse_duration(record_interval, flag="--record-interval")),
        experiment=experiment_name,
        store=str(store) if store else None,
    )

    def ready(started: Started) -> None:
        if started.notice:
            info(started.notice)
        version = f" version {started.version}" if started.version is not None else ""
        info(
            f"Serving {started.uri}{version} on {started.url} ({started.device}, {started.workers} worker(s)); "
            f"run {started.run_id[:12]}; SIGTERM or Ctrl-C drains and stops"
        )
        if json_out:
            out.print(
                json.dumps(
                    {
                        "url": started.url,
                        "uri": started.uri,
                        "version": started.version,
                        "run_id": started.run_id,
                        "device": started.device,
                    }
                ),
                markup=False,
                soft_wrap=True,
            )
        sys.stdout.flush()

    code = serve(options, on_ready=ready)
    if code:
        raise typer.Exit(code)
