"""`mlkit env`: lock, create ahead of time, list and prune cached environments."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from mlkit.cli import output
from mlkit.cli.output import handle_errors, info, print_json, print_table

env_app = output.command_group("env", "Example: mlkit env lock projects/cnn -p linux-64 -p osx-arm64")


def _ago(ts: float) -> str:
    delta = max(0.0, time.time() - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= size:
            return f"{int(delta // size)}{unit} ago"
    return f"{int(delta)}s ago"


def _env_ref(project: Path):
    """The EnvRef the project names (MLproject's conda_env / python_env, or the default files)."""
    from mlkit.project import load_project  # says "no such directory" (66) or "not a directory" (2)

    return load_project(project).env


@env_app.command("lock")
@handle_errors
def lock(
    project: Path = typer.Argument(..., help="The project directory (its conda.yaml is locked)."),
    platform: list[str] = typer.Option(
        [],
        "--platform",
        "-p",
        help="Target platform (repeatable), e.g. linux-64, osx-arm64. Default: this one.",
    ),
    cuda: str | None = typer.Option(
        None, "--cuda", metavar="VERSION", help="Lock as if __cuda=VERSION were present (GPU builds)."
    ),
    json_out: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
) -> None:
    """Solve conda.yaml for each platform and write conda-lock.yml next to it (conda-lock's format).

    Example: mlkit env lock . -p linux-64 -p osx-arm64 --cuda 12.4
    """
    # import budget: the core loads when the command runs, not for mlkit --help
    from mlkit.env.solve import make_lockfile

    result = make_lockfile(project, _env_ref(project), platform or None, cuda=cuda, progress=info)
    if json_out:
        print_json(result)
        return
    for note in result.notes:
        info(f"note: {note}")
    info(f"wrote {result.path} ({result.packages} packages, {', '.join(result.platforms)})")


@env_app.command("create")
@handle_errors
def create(
    project: Path = typer.Argument(..., help="The project directory."),
    env_manager: str = typer.Option(
        "auto", "--env-manager", help="auto, uv or conda (local builds nothing).", metavar="MANAGER"
    ),
    conda_exe: str | None = typer.Option(
        None, "--conda-exe", help="Build the conda part with conda, mamba, micromamba or a path to one."
    ),
    json_out: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
) -> None:
    """Build the project's environment ahead of time (or find it in the cache).

    Example: mlkit env create projects/cnn --env-manager uv
    """
    # import budget: the core loads when the command runs, not for mlkit --help
    from mlkit.env import prepare_env

    prepared = prepare_env(project, _env_ref(project), env_manager, conda_exe=conda_exe, progress=info)
    if json_out:
        print_json(prepared)
        return
    info(prepared.message)
    if prepared.path is not None:
        info(f"environment: {prepared.path}")


@env_app.command("list")
@handle_errors
def list_(json_out: bool = typer.Option(False, "--json", help="One JSON document on stdout.")) -> None:
    """List cached environments: hash, manager, path, size, last used, project.

    Example: mlkit env list --json
    """
    # import budget: the core loads when the command runs, not for mlkit --help
    from mlkit.env.cache import env_root, list_envs

    envs = list_envs()
    if json_out:
        print_json({"env_dir": env_root(), "envs": envs})
        return
    if not envs:
        info(f"no environments in {env_root()}")
        return
    rows = [
        (
            e.hash,
            e.manager + ("" if e.complete else " (incomplete)"),
            e.python_version or "",
            output.human_bytes(e.size),
            _ago(e.last_used),
            e.project or "",
            e.path,
        )
        for e in envs
    ]
    print_table(["hash", "manager", "python", "size", "last used", "project", "path"], rows)


@env_app.command("prune")
@handle_errors
def prune(
    older_than: str = typer.Option("30d", "--older-than", metavar="AGE", help="Remove envs unused for AGE."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Say what would go; delete nothing."),
    json_out: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
) -> None:
    """Remove environments not used for a while (and half-built leftovers).

    An env whose build is in progress (its lock is held), or that a run is using, is never touched.

    Example: mlkit env prune --older-than 14d --dry-run
    """
    # import budget: the core loads when the command runs, not for mlkit --help
    from mlkit.env.cache import prune as do_prune
    from mlkit.units import parse_age

    result = do_prune(parse_age(older_than), dry_run=dry_run)
    if json_out:
        print_json(result)
        return
    verb = "would remove" if dry_run else "removed"
    for env in result.removed:
        info(f"{verb} {env.path} ({output.human_bytes(env.size)}, last used {_ago(env.last_used)})")
    for env in result.skipped_locked:
        info(f"kept {env.path}: a build holds its lock")
    for env in result.skipped_in_use:
        info(f"kept {env.path}: a run is using it")
    freed = "would free" if dry_run else "freed"
    info(f"{verb} {len(result.removed)} environment(s), {freed} {output.human_bytes(result.bytes_freed)}")


def register(app: typer.Typer) -> None:
    app.add_typer(env_app, name="env")
