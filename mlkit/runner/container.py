"""The runner's side of `docker_env` runs: the checks made before the run exists (`preflight`),
the environment a dry run shows, and stopping the container with its client (`ContainerTree`).

The engine, the image and the engine argv are mlkit.env.container's; this module only decides
when each happens in a run and keeps the container's lifetime tied to the supervisor's.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from mlkit import proc
from mlkit.env import container as ctr
from mlkit.errors import MlkitError, UsageError
from mlkit.runner.tree import RunTree

if TYPE_CHECKING:
    from mlkit.env.manager import PreparedEnv
    from mlkit.project.model import Project
    from mlkit.runner.options import RunOptions
    from mlkit.runner.plan import RunPlan


def wanted(project: Project, options: RunOptions) -> bool:
    """Whether the run goes into a container, or names a container flag that must be checked."""
    docker = project.env is not None and project.env.kind == "docker"
    return (docker and options.env_manager != "local") or _container_flags(options) != []


def _container_flags(options: RunOptions) -> list[str]:
    flags = []
    if options.env_manager == "docker":
        flags.append("--env-manager docker")
    if options.build_image:
        flags.append("--build-image")
    if options.docker_args:
        flags.append("--docker-args")
    if options.container_engine != "auto":
        flags.append(f"--container-engine {options.container_engine}")
    return flags


def preflight(
    project: Project, options: RunOptions, store_root: Path, *, ask_engine: bool = True
) -> ctr.ContainerRequest:
    """Everything about the container that can be refused before the run exists: the flags, the
    host variables docker_env copies, --docker-args, and the engine (EnvBuildError, exit 73, when
    none answers; a dry run, `ask_engine=False`, only looks for the binary)."""
    env = project.env
    if env is None or env.kind != "docker":
        raise UsageError(
            f"{', '.join(_container_flags(options))}: the project has no docker_env",
            hint="add docker_env: {image: ...} to the MLproject, or drop the flag",
        )
    if options.env_manager not in ("auto", "docker"):
        raise UsageError(
            f"--env-manager {options.env_manager}: a docker_env project runs in its container",
            hint="use --env-manager docker (or auto), or local to run it in this environment",
        )
    if options.container_engine not in ctr.ENGINE_CHOICES:
        raise UsageError(
            f"--container-engine {options.container_engine!r}: unknown engine",
            hint="use auto, docker or podman",
        )
    spec = env.docker or {}
    label = str(project.file or project.directory)
    extra = ctr.parse_docker_args(options.docker_args)
    environment = ctr.resolve_environment(spec.get("environment"), label)
    store = Path(os.path.abspath(store_root))
    for what, path in (("the store", store), ("the project directory", project.directory)):
        if ":" in str(path):  # `-v SRC:DST` would split it
            raise UsageError(
                f"{what} {path}: a path with ':' cannot be mounted into a container",
                hint="move it to a path without ':' (or pass --store elsewhere)",
            )
    code_hash = None
    if options.build_image:  # reads every file of the project: only for --build-image
        code_hash = ctr.code_hash(project.directory, ctr.code_files(project.directory, [store]))
    engine = ctr.find_engine(options.container_engine) if ask_engine else ctr.Engine(
        ctr.which_engine(options.container_engine)
    )  # fmt: skip
    return ctr.ContainerRequest(
        engine=engine,
        image=str(env.image),
        project_dir=project.directory,
        project_name=project.name or project.directory.name,
        build_image=options.build_image,
        code_hash=code_hash,
        volumes=tuple(str(v) for v in spec.get("volumes") or []),
        environment=environment,
        extra_args=extra,
        user=None if ctr.names_user(extra) else f"{os.getuid()}:{os.getgid()}",
        exclude=(store,),
    )


def dry_env(request: ctr.ContainerRequest) -> PreparedEnv:
    """The environment a dry run plans with: the image named (or the --build-image tag), no id."""
    # import budget: the env manager loads only when a docker_env run is planned
    from mlkit.env.manager import container_env

    image = request.derived_tag if request.build_image else request.image
    return container_env(request, image, None, built=False)


class ContainerTree(RunTree):
    """The run's tree plus its container: a signal to the tree also stops the container
    (`<engine> stop -t GRACE`, then `kill` with SIGKILL), because a client that dies does not take
    its container with it."""

    def __init__(self, tree: RunTree, engine: str, name: str, grace: float):
        super().__init__(tree.child, tree.run_id, tree.before)
        self.engine, self.name, self.grace = engine, name, grace
        self._stopping: threading.Thread | None = None
        self._lock = threading.RLock()  # signal() runs in signal handlers: a second signal may nest

    def signal(self, sig: int) -> None:
        super().signal(sig)
        with self._lock:
            if sig == signal.SIGKILL:
                self._background(["kill", self.name])
            elif self._stopping is None:
                self._stopping = self._background(["stop", "-t", str(math.ceil(self.grace)), self.name])

    def _background(self, args: list[str]) -> threading.Thread:
        thread = threading.Thread(target=self._engine, args=(args,), name="mlkit-container-stop", daemon=True)
        thread.start()
        return thread

    def _engine(self, args: list[str], timeout: float | None = None) -> None:
        with contextlib.suppress(MlkitError, OSError):  # gone already: nothing to stop
            proc.run([self.engine, *args], timeout=timeout or self.grace + 30)

    def _wait_gone(self, deadline: float) -> None:
        """Until the engine no longer lists the container (docker's --rm removal runs on after
        the client exits, and `rm -f` meanwhile answers "removal already in progress")."""
        while time.monotonic() < deadline:
            try:
                done = proc.run(
                    [self.engine, "container", "inspect", "--format", "{{.Id}}", self.name], timeout=30
                )
            except (MlkitError, OSError):
                return
            if done.returncode != 0:
                return
            time.sleep(0.1)

    def finish(self, returncode: int) -> int:
        """After the client exited: no container is left running, and the container's own exit
        status (128+N: killed by signal N) reads as the client's death by that signal."""
        stopping = self._stopping
        if stopping is not None:
            stopping.join(timeout=self.grace + 30)
        if returncode < 0 or stopping is not None:  # the client was killed, or a stop was asked
            self._engine(["rm", "-f", self.name], timeout=60)
            self._wait_gone(deadline=time.monotonic() + 15)
        if returncode > 128:
            with contextlib.suppress(ValueError):
                return -signal.Signals(returncode - 128)
        return returncode


def container_tree(tree: RunTree, plan: RunPlan) -> RunTree:
    """`tree`, stopping the plan's container with it when the plan runs one."""
    if not plan.container_name or not plan.container_engine:
        return tree
    return ContainerTree(tree, plan.container_engine, plan.container_name, plan.kill_grace)
