"""`plan_run` is pure: the same inputs give the same plan and nothing on disk changes."""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

import pytest

from mlkit.env.manager import PreparedEnv
from mlkit.errors import UsageError
from mlkit.gpu.lease import GpuLease
from mlkit.project import load_project
from mlkit.runner.plan import LaunchOptions, PlanEnv, PlanLease, plan_run, rdzv_id_for
from mlkit.runner.supervise import classify


@dataclass
class FakeEnv:  # PlanEnv: the fields of PreparedEnv that plan_run reads
    python: Path = Path("/envs/abc/bin/python")
    env_vars: dict[str, str] = field(
        default_factory=lambda: {"PATH": "/envs/abc/bin:/usr/bin", "VIRTUAL_ENV": "/envs/abc"}
    )
    manager: str = "uv"


@dataclass
class FakeGpu:
    uuid: str


@dataclass
class FakeLease:  # PlanLease: the fields of GpuLease that plan_run reads
    gpus: list[FakeGpu]
    env: dict[str, str]


def lease(n: int) -> FakeLease:
    uuids = [f"GPU-{i:08d}-0000-0000-0000-000000000000" for i in range(n)]
    return FakeLease(
        [FakeGpu(u) for u in uuids],
        {"CUDA_VISIBLE_DEVICES": ",".join(uuids), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"},
    )


# --- the fakes follow the real interfaces ---------------------------------------------------------
# plan_run takes `PlanEnv` / `PlanLease` (mypy holds plan.py to reading only what they declare); the
# checks below hold the fakes and the real classes to the same Protocols, so a renamed or retyped
# field in PreparedEnv or GpuLease fails here instead of leaving these tests passing on a fiction.


def fits(actual: object, expected: object) -> bool:
    """Whether a value of type `actual` may stand where `expected` is read: the origin class is a
    subclass and the type arguments fit in turn (`dict[str, str]` fits `Mapping[str, str]`)."""
    if expected is object or expected is typing.Any:
        return True
    if typing.get_origin(expected) in (typing.Union, types.UnionType):
        return any(fits(actual, option) for option in typing.get_args(expected))
    if typing.get_origin(actual) in (typing.Union, types.UnionType):
        return all(fits(option, expected) for option in typing.get_args(actual))
    actual_class = typing.get_origin(actual) or actual
    expected_class = typing.get_origin(expected) or expected
    if not (isinstance(actual_class, type) and isinstance(expected_class, type)):
        return False
    if not issubclass(actual_class, expected_class):
        return False
    expected_args, actual_args = typing.get_args(expected), typing.get_args(actual)
    if not expected_args:
        return True
    return len(actual_args) == len(expected_args) and all(map(fits, actual_args, expected_args))


def _annotation_names(cls: type) -> dict[str, object]:
    """The module's globals plus the names it imports only for type checking (`if TYPE_CHECKING:`)."""
    module = sys.modules[cls.__module__]
    names = dict(vars(module))
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for imp in (n for n in node.body if isinstance(n, ast.ImportFrom)):
                source = importlib.import_module(imp.module or "")
                names.update({a.asname or a.name: getattr(source, a.name) for a in imp.names})
    return names


def members(cls: type) -> dict[str, object]:
    """The attributes a class offers, with their types: dataclass fields, annotations, properties."""
    names = _annotation_names(cls)
    found = dict(typing.get_type_hints(cls, globalns=names))
    for name, value in inspect.getmembers(cls, lambda v: isinstance(v, property)):
        found[name] = typing.get_type_hints(value.fget, globalns=names).get("return", object)
    return {name: kind for name, kind in found.items() if not name.startswith("_")}


@pytest.mark.parametrize(
    "protocol, fake, real", [(PlanEnv, FakeEnv, PreparedEnv), (PlanLease, FakeLease, GpuLease)]
)
def test_fakes_follow_the_real_interfaces(protocol, fake, real):
    wanted, fake_has, real_has = members(protocol), members(fake), members(real)
    assert wanted, f"{protocol.__name__} declares nothing"
    assert set(fake_has) == set(wanted), f"{fake.__name__} carries exactly what {protocol.__name__} declares"
    for name, kind in wanted.items():
        assert name in real_has, (
            f"{real.__name__} has no {name!r}: update {protocol.__name__} and {fake.__name__}"
        )
        assert fits(real_has[name], kind), f"{real.__name__}.{name}: {real_has[name]} is not a {kind}"
        assert fits(fake_has[name], kind), f"{fake.__name__}.{name}: {fake_has[name]} is not a {kind}"


def test_plan_run_takes_the_protocols():
    """plan_run is annotated with the Protocols, so mypy refuses a read of anything they lack."""
    parameters = inspect.signature(plan_run).parameters
    assert parameters["env"].annotation == "PlanEnv | None"
    assert parameters["lease"].annotation == "PlanLease | None"


def test_fits_refuses_what_does_not_fit():
    assert fits(dict[str, str], Mapping[str, str]) and fits(list[FakeGpu], typing.Sequence[object])
    assert not fits(str, Path)
    assert not fits(dict[str, int], Mapping[str, str])
    assert not fits(dict, Mapping[str, str])  # an untyped fake proves nothing
    assert not fits(Path | None, Path)


@pytest.fixture
def project(make_project):
    root = make_project(
        {
            "MLproject": """
                name: p
                entry_points:
                  main:
                    parameters: {lr: {type: float, default: 0.1}}
                    command: "python train.py --lr {lr}"
                  mod:
                    command: "python -u -m pkg.train --fast"
                  shell:
                    parameters: {n: {type: int, default: 3}}
                    command: "seq {n} | wc -l"
                  bash:
                    command: "./run.sh"
            """,
            "train.py": "",
        }
    )
    return load_project(root)


def _snapshot(root: Path) -> list[tuple[str, float]]:
    return sorted((str(p), p.stat().st_mtime) for p in root.rglob("*"))


def plan(project, entry="main", params=None, **kw):
    defaults = {
        "env": FakeEnv(),
        "lease": None,
        "store_root": Path("/store/mlruns"),
        "run_id": "r" * 32,
        "experiment_id": "7",
    }
    launch = {f.name: kw.pop(f.name) for f in fields(LaunchOptions) if f.name in kw}
    return plan_run(project, entry, params or {}, **(defaults | kw), launch=LaunchOptions(**launch))


def test_plan_is_pure(project, tmp_path):
    before = _snapshot(tmp_path)
    environ = dict(os.environ)
    first = plan(project, params={"lr": "0.5"}, lease=lease(1))
    assert plan(project, params={"lr": "0.5"}, lease=lease(1)) == first
    assert _snapshot(tmp_path) == before  # no store, no log dir, nothing written
    assert dict(os.environ) == environ
    assert not Path("/store").exists()


def test_python_is_swapped_and_the_child_env_is_complete(project):
    p = plan(project, params={"lr": "0.5"}, lease=lease(1))
    assert p.argv == ["/envs/abc/bin/python", "train.py", "--lr", "0.5"]
    assert p.cwd == project.directory
    assert p.env["MLKIT_RUN_ID"] == p.env["MLFLOW_RUN_ID"] == "r" * 32
    assert p.env["MLKIT_EXPERIMENT_ID"] == p.env["MLFLOW_EXPERIMENT_ID"] == "7"
    assert p.env["MLKIT_TRACKING_URI"] == "/store/mlruns"
    assert p.env["MLFLOW_TRACKING_URI"] == "file:///store/mlruns"
    assert p.env["VIRTUAL_ENV"] == "/envs/abc" and p.env["PATH"].startswith("/envs/abc/bin")
    assert p.env["CUDA_VISIBLE_DEVICES"].startswith("GPU-") and p.env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert p.env["PYTHONUNBUFFERED"] == "1"
    assert p.log_file == Path("/store/mlruns/7") / ("r" * 32) / "artifacts/logs/output.log"
    assert p.params == {"lr": "0.5"} and p.types == {"lr": "float"}
    assert not p.torchrun


def test_relative_store_root_becomes_absolute(project):
    p = plan(project, store_root=Path("mlruns"))
    assert Path(p.env["MLKIT_TRACKING_URI"]).is_absolute()
    assert p.env["MLFLOW_TRACKING_URI"].startswith("file:///")


def test_dry_run_plan_without_env_keeps_python(project):
    p = plan(project, env=None)
    assert p.argv[0] == "python"
    assert "VIRTUAL_ENV" not in p.env


def test_shell_commands_run_through_bash_with_the_env_path(project):
    p = plan(project, "shell", {"n": "4"})
    assert p.argv == ["bash", "-c", "seq 4 | wc -l"]
    assert p.shell == "seq 4 | wc -l"


def test_several_gpus_hand_off_to_torchrun_standalone(project):
    p = plan(project, params={"lr": "0.5"}, lease=lease(4))
    assert p.torchrun and p.nproc_per_node == 4
    assert p.argv == [
        "/envs/abc/bin/python", "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
        "--nproc-per-node", "4", "train.py", "--lr", "0.5",
    ]  # fmt: skip
    assert p.env["CUDA_VISIBLE_DEVICES"].count(",") == 3  # every rank sees the leased GPUs
    assert p.env["MLKIT_RUN_ID"] == "r" * 32  # one run id for every rank


def test_nproc_per_node_without_gpus_and_module_commands(project):
    p = plan(project, "mod", nproc_per_node=2)
    assert p.argv[3:] == [
        "--standalone",
        "--nnodes",
        "1",
        "--nproc-per-node",
        "2",
        "-m",
        "pkg.train",
        "--fast",
    ]
    assert plan(project, nproc_per_node=1).torchrun is False  # one process: run it directly


def test_multi_node_uses_c10d_rendezvous(project):
    p = plan(project, nnodes=2, node_rank=1, rdzv_endpoint="node0:29400", nproc_per_node=8)
    flags = p.argv[3:-3]
    assert flags == [
        "--nnodes", "2", "--node-rank", "1", "--nproc-per-node", "8", "--rdzv-backend", "c10d",
        "--rdzv-endpoint", "node0:29400", "--rdzv-id", p.rdzv_id,
    ]  # fmt: skip
    # every node computes the same id without talking to the others (each has its own run id)
    other = plan(project, nnodes=2, node_rank=0, rdzv_endpoint="node0:29400", nproc_per_node=8, run_id="s" * 32,
                 env=FakeEnv(python=Path("/other/python")))  # fmt: skip
    assert other.rdzv_id == p.rdzv_id == rdzv_id_for(p.command, 2, "node0:29400")
    with pytest.raises(UsageError):
        plan(project, nnodes=2)


def test_non_python_commands_are_not_wrapped(project):
    p = plan(project, "bash", lease=lease(2))
    assert not p.torchrun and p.argv == ["./run.sh"]
    assert p.notices and "torchrun" in p.notices[0]


@pytest.mark.parametrize(
    ("returncode", "reason", "signum", "expected"),
    [
        (0, None, None, ("FINISHED", 0, None, None)),
        (3, None, None, ("FAILED", 3, "exit_code", None)),
        (130, None, None, ("KILLED", 130, "signal", "SIGINT")),
        (-9, None, None, ("KILLED", 137, "signal", "SIGKILL")),
        (-15, "signal", 15, ("KILLED", 143, "signal", "SIGTERM")),
        (0, "signal", 2, ("KILLED", 130, "signal", "SIGINT")),  # stopped by us, even if it exits cleanly
        (-15, "timeout", 15, ("KILLED", 124, "timeout", "SIGTERM")),
    ],
)
def test_classify(returncode, reason, signum, expected):
    assert classify(returncode, reason, signum) == expected


def test_several_gpus_for_a_command_torchrun_cannot_take_run_it_once(make_project):
    """`python -c ...` with `--gpus 2`: torchrun takes only a script or a module, so the command
    runs once and sees both GPUs, as MLflow would run it (it used to fail with exit 2 after the
    run was created). Several processes asked for by name still fail, saying why."""
    inline = load_project(
        make_project(
            {"MLproject": "name: i\nentry_points:\n  main:\n    command: \"python -c 'print(1)'\"\n"}
        )
    )
    p = plan(inline, lease=lease(2))
    assert not p.torchrun and p.argv[1:] == ["-c", "print(1)"]
    assert p.notices and "runs once with all 2 GPUs" in p.notices[0]
    with pytest.raises(UsageError, match="python option '-c' is not supported"):
        plan(inline, lease=lease(2), nproc_per_node=2)
