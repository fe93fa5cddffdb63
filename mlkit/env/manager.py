"""`prepare_env`: put the environment a project asks for in place (or find it in the cache)."""

from __future__ import annotations

import errno
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from mlkit.env.ref import EnvRef
from mlkit.errors import EnvBuildError, EnvSpecError, MlkitError, UsageError

if TYPE_CHECKING:
    from mlkit.env.container import ContainerEnv, ContainerRequest
    from mlkit.env.spec import EnvSpec

MANAGERS = ("local", "auto", "uv", "conda", "docker")


@dataclass(frozen=True, eq=False)
class PreparedEnv:
    """The environment a run gets: its interpreter, the variables the child needs, its run tags."""

    manager: str  # what was used: local | uv | conda
    python: Path
    env_vars: dict[str, str]  # PATH with the env's bin first, VIRTUAL_ENV / CONDA_PREFIX
    hash: str | None
    path: Path | None
    reused: bool
    message: str
    tags: dict[str, str] = field(default_factory=dict)
    container: ContainerEnv | None = None  # docker_env: the container the command runs in


def load_spec(project_dir: Path, env_ref: EnvRef | None) -> EnvSpec | None:
    """`mlkit.env.spec.load_spec`; a project without an environment file never imports it."""
    if env_ref is None:
        return None
    from mlkit.env.spec import load_spec as load  # the import budget: `mlkit run` without an env file

    return load(project_dir, env_ref)


def env_hash(project_dir: Path, env_ref: EnvRef | None) -> str | None:
    """The content hash of the project's environment (the lockfile's when there is one). No build."""
    spec = load_spec(Path(project_dir), env_ref)
    return spec.hash if spec is not None else None


def prepare_env(
    project_dir: Path,
    env_ref: EnvRef | None,
    manager: str = "auto",
    *,
    conda_exe: str | None = None,
    progress: Callable[[str], None] | None = None,
    container: ContainerRequest | None = None,
) -> PreparedEnv:
    """Return the environment to run the project in, building and caching it when needed.
    A docker_env project gets its container (`container`: what mlkit.runner.container settled)."""
    project_dir = Path(project_dir)
    if manager not in MANAGERS:
        raise UsageError(
            f"--env-manager {manager!r}: unknown environment manager",
            hint=f"choose one of {', '.join(MANAGERS)}",
        )
    if conda_exe and manager not in ("conda", "auto"):
        raise UsageError(f"--conda-exe is for --env-manager conda, not {manager}")
    if container is not None:
        # import budget: the container module loads only for docker_env projects
        from mlkit.env.container import resolve_image

        image, image_id, built, image_home = resolve_image(container, progress)
        return container_env(container, image, image_id, built=built, image_home=image_home)
    if env_ref is not None and env_ref.kind == "docker" and manager != "local":
        raise EnvSpecError(
            f"MLproject: docker_env (image {env_ref.image}) needs its container engine checked first",
            hint="run it with mlkit run (or use --env-manager local to run it in this environment)",
        )
    if manager == "docker":
        raise UsageError("--env-manager docker: the project has no docker_env", hint="use auto, uv or conda")
    if manager == "local":  # no checks: even a broken environment file does not stop the run
        try:
            spec = load_spec(project_dir, env_ref)
        except EnvSpecError:
            spec = None
        return _in_place(spec, "local", "using the current interpreter (--env-manager local: no checks)")
    spec = load_spec(project_dir, env_ref)
    if spec is None:
        return _in_place(None, manager, "no environment file: using the current environment")

    why = ""
    if manager == "auto":
        from mlkit.env.check import check_current  # the import budget: only --env-manager auto

        result = check_current(spec)
        if result.satisfied:
            return _in_place(
                spec,
                "auto",
                f"using the current environment: it satisfies {spec.file_label} ({spec.package_count()} packages)",
            )
        manager = "uv" if spec.kind == "python" or spec.pip_only else "conda"
        choice = "pip-only: uv" if manager == "uv" else "it needs conda packages: conda"
        why = f"the current environment does not satisfy it: {result.reason}; {choice}"
    elif manager == "conda" and spec.kind == "python":
        raise EnvSpecError(
            f"{spec.file_label}: a python_env project cannot be built with conda",
            hint="use --env-manager uv (or local)",
        )
    if spec.lockfile is not None:
        _check_lock_fresh(spec, spec.lockfile, project_dir)
    return _cached_build(spec, manager, project_dir, conda_exe=conda_exe, progress=progress, why=why)


def container_env(
    request: ContainerRequest, image: str, image_id: str | None, *, built: bool, image_home: bool = False
) -> PreparedEnv:
    """The environment of a docker_env run: the command's `python` is the image's own, the tags
    are MLflow's (mlflow.docker.image.uri / .id) and mlkit's (engine, env manager)."""
    # import budget: the container module loads only for docker_env projects
    from mlkit.env.container import ContainerEnv

    engine = request.engine.name
    tags = {
        "mlkit.env.manager": "docker",
        "mlkit.env_manager": "docker",
        "mlkit.container_engine": engine,
        "mlflow.docker.image.uri": image,
    }
    if image_id:
        tags["mlflow.docker.image.id"] = image_id
    if request.build_image:
        tags["mlkit.container_image_built"] = "true" if built else "false"
    verb = "built" if built else "using"
    return PreparedEnv(
        manager="docker",
        python=Path("python"),  # the image's python, found on its PATH
        env_vars={},  # nothing of this host's environment goes in but what the plan passes with -e
        hash=None,
        path=None,
        reused=not built,
        message=f"{verb} image {image} ({engine}{', ' + image_id[:19] if image_id else ''})",
        tags=tags,
        container=ContainerEnv.of(request, image, image_id, image_home),
    )


def _check_lock_fresh(spec: EnvSpec, lockfile: Path, project_dir: Path) -> None:
    """Refuse a lockfile made from another version of the environment file. load_spec read the
    spec hash the lockfile records when it read the lockfile (and the env memo keeps it with the
    spec, keyed by both files' bytes), so this is a comparison, not a second parse."""
    if spec.lockfile_spec_hash and spec.lockfile_spec_hash != spec.spec_hash:
        raise EnvSpecError(
            f"{lockfile.name}: out of date: {spec.file_label} changed since it was locked",
            hint=f"run `mlkit env lock {project_dir}` again (or delete {lockfile.name})",
        )


def _path_with(bin_dir: str) -> str:
    rest = os.environ.get("PATH", "")
    return bin_dir + (os.pathsep + rest if rest else "")


def _in_place(spec: EnvSpec | None, requested: str, message: str) -> PreparedEnv:
    python = Path(sys.executable)
    version = ".".join(map(str, sys.version_info[:3]))
    tags = {
        "mlkit.env.manager": "local",
        "mlkit.env.python_version": version,
        "mlkit.env.reused": "false",
    }
    if requested != "local":
        tags["mlkit.env.requested"] = requested
    if spec is not None:
        tags["mlkit.env.hash"] = spec.hash
        if spec.lockfile_hash:
            tags["mlkit.env.lockfile_hash"] = spec.lockfile_hash
    env_vars = {"PATH": _path_with(str(python.parent))}
    if spec is not None:
        env_vars.update(spec.variables)
    return PreparedEnv(
        manager="local",
        python=python,
        env_vars=env_vars,
        hash=spec.hash if spec is not None else None,
        path=None,
        reused=False,
        message=message,
        tags=tags,
    )


def env_key(spec: EnvSpec, manager: str) -> str:
    return f"{spec.hash}-{manager}"


def _cached_build(
    spec: EnvSpec,
    manager: str,
    project_dir: Path,
    *,
    conda_exe: str | None,
    progress: Callable[[str], None] | None,
    why: str,
) -> PreparedEnv:
    from mlkit.env import cache  # the import budget: a run in the current environment never loads it

    key = env_key(spec, manager)
    path = cache.env_path(key)
    in_use = cache.hold_in_use(key)  # before the marker is read: prune never deletes it from now on
    marker = _usable(cache.read_marker(path))
    if marker is not None:  # fast path: complete envs are used without a lock
        cache.touch_last_used(path)
        cache.link_runtime(path)
        return _prepared(spec, manager, path, marker, reused=True, why=why, in_use=in_use)
    if conda_exe:
        from mlkit.env.conda import resolve_conda_exe  # the import budget: only with --conda-exe

        resolve_conda_exe(conda_exe)  # a missing binary fails before anything is locked or made
    cache.make_root()
    with cache.build_lock(key, on_wait=progress):
        marker = _usable(cache.read_marker(path))
        if marker is not None:  # another process built it while we waited
            cache.touch_last_used(path)
            cache.link_runtime(path)
            return _prepared(spec, manager, path, marker, reused=True, why=why, in_use=in_use)
        log = cache.BuildLog(key, progress)
        try:
            if path.exists() or path.is_symlink():
                why_gone = "no " + cache.MARKER if cache.read_marker(path) is None else "its python is gone"
                log.step(f"removing a half-built or broken environment at {path} ({why_gone})")
                cache.kill_orphans(key, path)
                cache.remove_tree(path)
            started = time.monotonic()
            log.step(f"build {key} (pid {os.getpid()}) for {spec.source} with {manager}")
            info = _build(spec, manager, path, log, project_dir, conda_exe)
            info.update(
                manager=manager,
                hash=spec.hash,
                spec_hash=spec.spec_hash,
                lockfile_hash=spec.lockfile_hash,
                created=time.time(),
                build_seconds=round(time.monotonic() - started, 3),
                project=str(project_dir.resolve()),
                source=str(spec.source),
                conda_exe=conda_exe,
            )
            cache.write_marker(path, info)
            log.step(f"done in {info['build_seconds']:.1f} s")
        except BaseException as exc:
            log.write(f"build failed: {type(exc).__name__}: {exc}")
            cache.remove_tree(path)  # nothing half-built stays in the cache
            if isinstance(exc, MlkitError):
                exc.hint = (exc.hint + "; " if exc.hint else "") + f"build log: {log.path}"
                raise
            what = f"{manager} environment for {spec.file_label} failed"
            full = isinstance(exc, cache.CommandFailed) and exc.disk_full
            if full or (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)):
                raise cache.disk_full(what, log.path) from None
            if isinstance(exc, cache.CommandFailed):
                raise EnvBuildError(
                    f"{manager} environment for {spec.file_label} failed: {exc.last_error_line()}",
                    hint=f"see the build log: {log.path}",
                ) from None
            if isinstance(exc, OSError):
                raise EnvBuildError(
                    f"{manager} environment for {spec.file_label} failed: {exc}",
                    hint=f"see the build log: {log.path}",
                ) from None
            raise
        finally:
            log.close()
    return _prepared(spec, manager, path, info, reused=False, why=why, in_use=in_use)


def _usable(marker: dict | None) -> dict | None:
    """A complete env whose interpreter still exists (a venv's base Python may have been removed)."""
    if marker is None:
        return None
    python = marker.get("python")
    return marker if python is None or os.path.exists(python) else None


def _build(spec, manager, path, log, project_dir, conda_exe) -> dict:
    if manager == "uv":
        from mlkit.env.uv import build_venv  # the import budget: one manager's module per build

        if spec.kind == "conda" and spec.non_pip_conda_deps:
            log.step("uv: conda-only dependencies are not installed: " + ", ".join(spec.non_pip_conda_deps))
        return build_venv(spec, path, log, project_dir)
    from mlkit.env.conda import build_prefix  # the import budget: one manager's module per build

    return build_prefix(spec, path, log, project_dir, conda_exe=conda_exe)


def _prepared(
    spec: EnvSpec,
    manager: str,
    path: Path,
    info: dict,
    *,
    reused: bool,
    why: str,
    in_use: IO[bytes] | None = None,
) -> PreparedEnv:
    bin_dir = path / "bin"
    python = Path(info.get("python") or sys.executable)
    env_vars = {"PATH": _path_with(str(bin_dir))}
    if manager == "uv":
        env_vars["VIRTUAL_ENV"] = str(path)
    else:
        env_vars["CONDA_PREFIX"] = str(path)
        env_vars["CONDA_DEFAULT_ENV"] = str(path)
        env_vars.update(spec.variables)
    tags = {
        "mlkit.env.manager": manager,
        "mlkit.env.hash": spec.hash,
        "mlkit.env.path": str(path),
        "mlkit.env.python_version": str(info.get("python_version") or ""),
        "mlkit.env.reused": "true" if reused else "false",
    }
    if spec.lockfile_hash:
        tags["mlkit.env.lockfile_hash"] = spec.lockfile_hash
    if why:
        tags["mlkit.env.requested"] = "auto"
    notes = []
    if manager == "conda":
        tags["mlkit.env.virtual_packages"] = info.get("virtual_packages", "")
        if spec.lockfile is not None:
            cuda = info.get("lock_cuda")
            tags["mlkit.env.lock_cuda"] = cuda or "none"
            if not cuda:
                notes.append(f"{spec.lockfile.name} was made without __cuda (CPU builds)")
        elif "__cuda" not in info.get("virtual_packages", ""):
            notes.append("solved without __cuda (no NVIDIA driver found)")
    if manager == "uv" and spec.kind == "conda" and spec.non_pip_conda_deps:
        notes.append("conda-only packages skipped: " + ", ".join(spec.non_pip_conda_deps))
    verb = "reusing" if reused else "built"
    message = f"{verb} {manager} environment {spec.hash} for {spec.file_label}"
    if why:
        message += f" ({why})"
    if notes:
        message += "; " + "; ".join(notes)
    prepared = PreparedEnv(
        manager=manager,
        python=python,
        env_vars=env_vars,
        hash=spec.hash,
        path=path,
        reused=reused,
        message=message,
        tags=tags,
    )
    object.__setattr__(prepared, "_in_use", in_use)  # held while the PreparedEnv lives (not a field)
    return prepared
