"""`plan_run`: project + parameters + environment + GPUs -> the exact argv, env vars and cwd. Pure.

Nothing here touches the filesystem, the environment or a process: the same inputs always give
the same `RunPlan`, so the launch decisions (python swap, torchrun hand-off, the variables the
child gets) are unit-tested without running anything.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from mlkit.digest import sha256_hex
from mlkit.errors import UsageError
from mlkit.settings import host_state_dir

if TYPE_CHECKING:  # only for annotations: importing them would load their packages
    from mlkit.project.command import ResolvedCommand
    from mlkit.project.model import Project

PYTHON_NAMES = ("python", "python3")
DEFAULT_KILL_GRACE = 10.0

# Interpreter options that torchrun's own `python -u` launch makes unnecessary or that are harmless
# to drop when the same script runs once per rank.
_DROPPABLE_PY_FLAGS = {"-u", "-B", "-E", "-s", "-S", "-O", "-OO", "-q"}


class PlanEnv(Protocol):
    """What `plan_run` reads of a built environment (`mlkit.env.manager.PreparedEnv`)."""

    @property
    def python(self) -> Path: ...
    @property
    def env_vars(self) -> Mapping[str, str]: ...
    @property
    def manager(self) -> str: ...


class PlanLease(Protocol):
    """What `plan_run` reads of the run's GPUs (`mlkit.gpu.lease.GpuLease`)."""

    @property
    def gpus(self) -> Sequence[object]: ...
    @property
    def env(self) -> Mapping[str, str]: ...


@dataclass(frozen=True, eq=False)
class LaunchOptions:
    """How the entry point is launched: the torchrun layout, the deadline and signals, the terminal."""

    nproc_per_node: int | None = None
    nnodes: int | None = None
    node_rank: int | None = None
    rdzv_endpoint: str | None = None
    timeout: float | None = None  # seconds
    kill_grace: float = DEFAULT_KILL_GRACE  # seconds between a forwarded signal and SIGKILL
    stderr_tty: bool = False  # the child's stderr pipe ends on a terminal


@dataclass(frozen=True)
class RunPlan:
    """Everything needed to start the entry point, decided before anything runs."""

    run_id: str
    experiment_id: str
    entry_point: str
    argv: list[str]  # what is executed (torchrun or `bash -c` wrapping included)
    command: list[str]  # the entry point's own argv (python swapped), before any torchrun wrap
    shell: str | None  # the MLproject command when it needs a shell (argv is then `bash -c shell`)
    env: dict[str, str | None]  # overrides on top of the supervisor's environment
    cwd: Path
    log_dir: Path  # <run>/artifacts/logs
    params: dict[str, str] = field(default_factory=dict)  # raw values, as logged
    types: dict[str, str] = field(default_factory=dict)
    env_manager: str = "local"
    store_root: Path = Path("mlruns")
    torchrun: bool = False
    nproc_per_node: int | None = None
    nnodes: int | None = None
    rdzv_id: str | None = None
    timeout: float | None = None
    kill_grace: float = DEFAULT_KILL_GRACE
    notices: list[str] = field(default_factory=list)
    # The interpreter that runs the command's python/python3, when known (a dry run: None if the
    # environment still has to be built); argv keeps the command's own word until then.
    interpreter: str | None = None
    # docker_env: argv is `<engine> run ... <image> <command>` and the container is named after the run
    container_engine: str | None = None
    container_name: str | None = None
    container_image: str | None = None
    # A multi-node run's node other than the first (`--run-id RUN --node-rank R`, R > 0): it runs
    # its share of the launch; the first node's supervisor alone writes the run's status and metrics.
    node_rank: int = 0
    secondary: bool = False

    @property
    def log_file(self) -> Path:
        """The entry point's interleaved stdout+stderr: <run>/artifacts/logs/output.log
        (output-node<R>.log on a secondary node, so the nodes never interleave in one file)."""
        return self.log_dir / (f"output-node{self.node_rank}.log" if self.secondary else "output.log")


def plan_run(
    project: Project,
    entry_point: str,
    params: dict[str, str],
    *,
    env: PlanEnv | None,
    lease: PlanLease | None,
    store_root: Path | str,
    run_id: str,
    experiment_id: str,
    command: ResolvedCommand | None = None,
    artifact_dir: Path | None = None,
    env_manager: str | None = None,
    launch: LaunchOptions = LaunchOptions(),
    dry_python: str | None = None,
) -> RunPlan:
    """The launch plan for one run. `env` is a PreparedEnv (None: not built yet, as in --dry-run),
    `lease` a GpuLease or None; `command` is the already resolved command (else it is resolved here).
    Without `env` (a dry run) the command keeps its own `python`/`python3`; `dry_python` is the
    interpreter the run would start for it, when that is known without building anything."""
    nproc_per_node, nnodes, node_rank = launch.nproc_per_node, launch.nnodes, launch.node_rank
    rdzv_endpoint = launch.rdzv_endpoint
    if command is None:
        command = project.entry_point(entry_point).resolve(params)
    store_root = Path(store_root)
    notices: list[str] = []
    word = command.argv[0] if command.argv and command.argv[0] in PYTHON_NAMES else "python"
    python = str(env.python) if env is not None else word
    interpreter = str(env.python) if env is not None else dry_python

    if command.argv is not None:
        own = list(command.argv)
        if own and own[0] in PYTHON_NAMES:
            own[0] = python
        shell = None
        base_argv = own
    else:
        # import budget: loaded only for a shell command; argv commands skip it
        from mlkit.project import shell_argv

        shell = command.shell
        base_argv = shell_argv(shell or "")
        own = base_argv

    gpu_count = len(lease.gpus) if lease is not None else 0
    nproc = nproc_per_node if nproc_per_node is not None else (gpu_count if gpu_count > 1 else None)
    multi = (nproc is not None and nproc > 1) or (nnodes is not None and nnodes > 1)
    argv = base_argv
    use_torchrun = False
    rdzv_id = None
    script = None
    if multi and command.argv and command.argv[0] in PYTHON_NAMES:
        try:
            script = _script_part(command.argv[1:])
        except UsageError:
            if nproc_per_node is not None or (nnodes is not None and nnodes > 1):
                raise  # several processes were asked for by name: say why they cannot be had
            notices.append(  # several GPUs only: the command runs once and sees them all, as MLflow runs it
                "the command is not `python script.py` or `python -m module`, so it runs once with all "
                f"{gpu_count} GPUs, not through torchrun"
            )
            multi = False
    if multi:
        if script is not None:
            rdzv_id = rdzv_id_for(own, nnodes, rdzv_endpoint) if nnodes and nnodes > 1 else None
            argv = [
                python,
                "-m",
                "torch.distributed.run",
                *_torchrun_flags(nproc, nnodes, node_rank, rdzv_endpoint, rdzv_id),
                *script,
            ]
            use_torchrun = True
        else:
            notices.append(
                "the command does not start with python, so it runs once, not through torchrun; "
                "launch torchrun yourself in the MLproject command for several processes"
            )

    art = artifact_dir if artifact_dir is not None else store_root / experiment_id / run_id / "artifacts"
    store_abs = store_root if store_root.is_absolute() else Path(os.path.abspath(store_root))
    child_env: dict[str, str | None] = {}
    if env is not None:
        child_env.update(env.env_vars)
    if lease is not None:
        child_env.update(lease.env)
    child_env.update(
        {
            "MLKIT_RUN_ID": run_id,
            "MLKIT_TRACKING_URI": str(store_abs),
            "MLKIT_EXPERIMENT_ID": experiment_id,
            "MLFLOW_RUN_ID": run_id,
            "MLFLOW_TRACKING_URI": store_abs.as_uri(),
            "MLFLOW_EXPERIMENT_ID": experiment_id,
            # The child writes into a pipe; unbuffered output reaches output.log (and a crash
            # report) as it is printed, not when a buffer fills.
            "PYTHONUNBUFFERED": "1",
        }
    )
    if launch.stderr_tty:  # the pipe ends on a terminal: progress lines may rewrite themselves there
        child_env["MLKIT_STDERR_TTY"] = "1"
    manager = env_manager or (env.manager if env is not None else None) or "local"
    container = getattr(env, "container", None)
    if container is not None:  # the same command, inside the run's container
        # import budget: the container module loads only for docker_env projects
        from mlkit.env.container import container_name, engine_argv, inner_command

        uuids = [str(getattr(g, "uuid", g)) for g in lease.gpus] if lease is not None else []
        if uuids and os.environ.get("MLKIT_STATE_DIR"):
            # the ledger counts a process as the run's when its environment names the run and this
            # state dir (gpu.trust.run_processes): the container's must, or a SIGKILLed supervisor's
            # container would run on, on GPUs the ledger then gives to the next run
            child_env["MLKIT_STATE_DIR"] = str(host_state_dir())
        inner = inner_command(argv, shell if argv is base_argv else None)
        art_abs = Path(os.path.abspath(art))
        mounts = [store_abs] if art_abs.is_relative_to(store_abs) else [store_abs, art_abs]
        argv = engine_argv(
            container, inner, child_env, run_id=run_id, mounts=mounts, gpu_uuids=uuids,
            node_rank=node_rank or 0,
        )  # fmt: skip
        manager = "docker"
    return RunPlan(
        run_id=run_id,
        experiment_id=experiment_id,
        entry_point=entry_point,
        argv=argv,
        command=own,
        shell=shell,
        env=child_env,
        cwd=project.directory,
        log_dir=art / "logs",
        params=dict(command.params),
        types=dict(command.types),
        env_manager=manager,
        store_root=store_abs,
        torchrun=use_torchrun,
        nproc_per_node=(nproc or 1) if use_torchrun else None,
        nnodes=nnodes if use_torchrun else None,
        rdzv_id=rdzv_id,
        timeout=launch.timeout,
        kill_grace=launch.kill_grace,
        notices=notices,
        interpreter=interpreter,
        container_engine=container.engine if container is not None else None,
        container_name=container_name(run_id, node_rank or 0) if container is not None else None,
        container_image=container.image if container is not None else None,
    )


def _script_part(args: list[str]) -> list[str]:
    """The part of `python [opts] script args` / `python -m mod args` that torchrun takes."""
    i = 0
    while i < len(args) and args[i] in _DROPPABLE_PY_FLAGS:
        i += 1
    rest = args[i:]
    if not rest:
        raise UsageError(
            "cannot hand the command to torchrun: it names no script",
            hint="the entry point's command must be `python script.py ...` or `python -m module ...`",
        )
    if rest[0] == "-m" and len(rest) > 1:
        return ["-m", *rest[1:]]
    if rest[0].startswith("-"):
        raise UsageError(
            f"cannot hand the command to torchrun: python option {rest[0]!r} is not supported there",
            hint="use `python script.py ...` or `python -m module ...` in the MLproject command",
        )
    return rest


def _torchrun_flags(
    nproc: int | None, nnodes: int | None, node_rank: int | None, endpoint: str | None, rdzv_id: str | None
) -> list[str]:
    if nnodes is None or nnodes <= 1:
        return ["--standalone", "--nnodes", "1", "--nproc-per-node", str(nproc or 1)]
    if not endpoint:
        raise UsageError(
            f"--nnodes {nnodes} needs --rdzv-endpoint HOST[:PORT]",
            hint="name the host of node 0, e.g. --rdzv-endpoint node0:29400, on every node",
        )
    return [
        "--nnodes",
        str(nnodes),
        "--node-rank",
        str(node_rank or 0),
        "--nproc-per-node",
        str(nproc or 1),
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        endpoint,
        "--rdzv-id",
        rdzv_id or "mlkit",
    ]


def rdzv_id_for(command: list[str], nnodes: int | None, endpoint: str | None) -> str:
    """A rendezvous id every node computes alike (same command, endpoint and node count).

    Each node's `mlkit run` creates its own run id, so the run id cannot be the rendezvous id
    without the nodes talking first; this one needs no coordination.
    """
    text = json.dumps([command[1:], nnodes, endpoint])
    return "mlkit-" + sha256_hex(text.encode())[:16]


def signal_name(signum: int) -> str:
    """SIGTERM for 15; `SIG<n>` for numbers Python has no name for."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"SIG{signum}"
