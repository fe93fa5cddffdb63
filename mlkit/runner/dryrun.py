"""`--dry-run`: the plan a run would start (argv, env, store, experiment), resolved without creating
anything: no lock, no store, no environment build, no GPU lease."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlkit.runner.options import RunOptions, describe_experiment
from mlkit.runner.plan import LaunchOptions, RunPlan, plan_run

if TYPE_CHECKING:
    from mlkit.env.container import ContainerRequest
    from mlkit.project.command import ResolvedCommand
    from mlkit.project.model import Project


@dataclass
class DryRun:
    """What `--dry-run` shows: the resolved plan; nothing was created."""

    plan: RunPlan
    experiment: str  # "name" or "id <x>" as it would be picked
    store_root: Path
    env_manager: str
    gpus: str
    slurm_script: str | None = None  # --backend slurm: the batch script it would submit


def dry_run(
    project: Project,
    options: RunOptions,
    command: ResolvedCommand,
    store_root: Path,
    launch: LaunchOptions,
    container: ContainerRequest | None = None,
    slurm_script: str | None = None,
) -> DryRun:
    """The plan `options` would run, after the same checks as a run (the env file is read too);
    a docker_env run's plan is the engine's argv, with the image it would run."""
    # import budget: the env manager loads only for --dry-run
    from mlkit.env.manager import env_hash

    env_hash(project.directory, project.env)  # read and check the env file as the run will
    env = None
    if container is not None:
        # import budget: the container module loads only for docker_env projects
        from mlkit.runner.container import dry_env

        env = dry_env(container)
    plan = plan_run(
        project,
        options.entry_point,
        dict(options.params),
        env=env,
        lease=None,
        store_root=store_root,
        run_id="<run-id>",
        experiment_id="<experiment-id>",
        command=command,
        env_manager=options.env_manager,
        dry_python=_dry_python(project, options.env_manager),
        launch=launch,
    )
    manager = plan.env_manager if container is not None else options.env_manager
    return DryRun(plan, describe_experiment(options), store_root, manager, options.gpus, slurm_script)


def _dry_python(project: Project, manager: str) -> str | None:
    """The interpreter a run would start, when known without building anything: this one for
    --env-manager local, without an environment file, or when `auto` finds this env satisfies it."""
    if manager == "local" or project.env is None:
        return sys.executable
    if manager == "auto" and project.env.kind != "docker":
        # import budget: the env manager loads only for --dry-run
        from mlkit.env.check import check_current
        from mlkit.env.manager import load_spec

        spec = load_spec(project.directory, project.env)
        if spec is None or check_current(spec).satisfied:
            return sys.executable
    return None
