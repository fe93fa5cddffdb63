"""`docker_env` projects: the container engine (docker or podman), the image, and the engine argv.

mlkit drives the engine's own CLI as argv (no SDK, no shell), and calls `podman` itself rather
than the docker CLI through podman's socket (through the socket `docker run --rm` reports exit 0
for a failing container). What happens where:

- `find_engine` (before the run exists): which engine, and does it answer; EnvBuildError (73) if not.
- `resolve_image` (the run's environment step): the image to run and its id. Without
  `--build-image` the project's image as it is (pulled when missing), with the project directory
  bind-mounted at MLflow's path; with it, a derived image with the project copied there, tagged
  by the content's hash and built once under the environment cache's lock.
- `engine_argv` (pure, called by `plan_run`): `<engine> run --rm --init --name mlkit-<run> ...`.

docs/environments.md ("Containers") lists every difference from `mlflow run`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mlkit import proc
from mlkit.errors import EnvBuildError, EnvSpecError, MlkitError, UsageError

ENGINES = ("docker", "podman")
ENGINE_CHOICES = ("auto", *ENGINES)
CODE_DIR = "/mlflow/projects/code"  # MLflow's MLFLOW_DOCKER_WORKDIR_PATH
CONTAINER_HOME = "/tmp"  # HOME for a container user the image does not know (engine_argv)
NAME_PREFIX = "mlkit-"  # containers are named mlkit-<run id>
CDI_DIRS = ("/etc/cdi", "/var/run/cdi")  # where podman looks for CDI specs
_TAG_VERSION = b"mlkit-image-v1"
# Never copied into a --build-image image (nor hashed): VCS data, stores, byte-code caches.
_SKIP_DIRS = frozenset({".git", ".hg", ".svn", "mlruns", "__pycache__"})
_CHECK_TIMEOUT = 20.0  # seconds for `docker version` / `podman version` to answer

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Engine:
    """A container engine that answered: its name, and whether it can pass NVIDIA GPUs in."""

    name: str  # docker | podman
    gpu_problem: str | None = None  # why leased GPUs cannot be passed in; None when they can
    cdi_devices: frozenset[str] = frozenset()  # podman: the nvidia.com/gpu device names CDI specs define


@dataclass(frozen=True)
class ContainerRequest:
    """What a run asks of its container, settled before the run exists (`find_engine` answered,
    host variables read, --docker-args parsed)."""

    engine: Engine
    image: str  # docker_env.image
    project_dir: Path
    project_name: str
    build_image: bool = False
    code_hash: str | None = None  # --build-image: the hash of the files copied into the image
    volumes: tuple[str, ...] = ()
    environment: tuple[tuple[str, str | None], ...] = ()  # docker_env.environment; None: copied from the host
    extra_args: tuple[str, ...] = ()  # --docker-args as engine flags
    user: str | None = None  # uid:gid the container runs as; None when --docker-args names one
    exclude: tuple[Path, ...] = ()  # never copied by --build-image (the store, when inside the project)

    @property
    def derived_tag(self) -> str:
        """The --build-image image: `localhost/mlkit-<project>:<hash of base name and content>`."""
        digest = hashlib.sha256(_TAG_VERSION + b"\0" + self.image.encode() + b"\0")
        digest.update((self.code_hash or "").encode())
        name = re.sub(r"[^a-z0-9]+", "-", self.project_name.lower())[:60].strip("-") or "project"
        return f"localhost/{NAME_PREFIX}{name}:{digest.hexdigest()[:16]}"


@dataclass(frozen=True)
class ContainerEnv:
    """The container a run gets (`PreparedEnv.container`): everything `engine_argv` needs."""

    engine: str
    image: str  # what `run` is given
    image_id: str | None
    project_dir: Path
    mount_code: bool  # bind-mount the project at CODE_DIR (no --build-image)
    volumes: tuple[str, ...] = ()
    environment: tuple[tuple[str, str | None], ...] = ()
    extra_args: tuple[str, ...] = ()
    user: str | None = None
    gpu_problem: str | None = None
    cdi_devices: frozenset[str] = field(default_factory=frozenset)
    image_home: bool = False  # the image's config sets HOME (ENV HOME=... in its Dockerfile)

    @classmethod
    def of(
        cls, request: ContainerRequest, image: str, image_id: str | None, image_home: bool = False
    ) -> ContainerEnv:
        return cls(
            engine=request.engine.name, image=image, image_id=image_id, project_dir=request.project_dir,
            mount_code=not request.build_image, volumes=request.volumes, environment=request.environment,
            extra_args=request.extra_args, user=request.user, gpu_problem=request.engine.gpu_problem,
            cdi_devices=request.engine.cdi_devices, image_home=image_home,
        )  # fmt: skip


# ------------------------------------------------------------------------------ the request
# engine flags mlkit sets itself: given again they would take the container out of its hands
_MLKIT_OWNED = {
    **dict.fromkeys(
        ("name", "cidfile"), "mlkit names the container (mlkit-<run id>) to stop and clean it up"
    ),
    **dict.fromkeys(
        ("d", "detach"), "the run is the container's life: mlkit waits for it and records how it ended"
    ),
    "rm": "mlkit removes the container itself (--rm is always set)",
    "gpus": "the run's GPUs come from its lease (--gpus N on mlkit run); more would double-book them",
}


def parse_docker_args(values: Sequence[str]) -> tuple[str, ...]:
    """MLflow's `-A/--docker-args`: `name=value` -> `--name value`, `name` -> `--name` (one letter:
    `-n`). A repeated name is refused, as MLflow does."""
    args: list[str] = []
    seen: set[str] = set()
    for item in values:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not name or name.startswith("-") or any(c.isspace() for c in name):
            raise UsageError(
                f"--docker-args {item!r}: expected NAME=VALUE or NAME",
                hint="e.g. --docker-args shm-size=8g --docker-args ipc=host (no leading dashes)",
            )
        if name in seen:
            raise UsageError(f"--docker-args {name}: given twice", hint="pass each docker argument once")
        if name in _MLKIT_OWNED:
            raise UsageError(f"--docker-args {name}: {_MLKIT_OWNED[name]}", hint=f"drop --docker-args {name}")
        seen.add(name)
        flag = ("-" if len(name) == 1 else "--") + name
        args += [flag, value] if sep else [flag]
    return tuple(args)


def names_user(extra_args: Sequence[str]) -> bool:
    """True when --docker-args sets the container's user itself."""
    return any(a in ("-u", "--user") for a in extra_args)


def names_home(extra_args: Sequence[str]) -> bool:
    """True when --docker-args may set HOME itself: `env=HOME=...`, `e=HOME`, or an env file."""
    return any(
        flag == "--env-file"
        or (
            flag in ("-e", "--env")
            and i + 1 < len(extra_args)
            and extra_args[i + 1].split("=", 1)[0] == "HOME"
        )
        for i, flag in enumerate(extra_args)
    )


def resolve_environment(entries: object, label: str) -> tuple[tuple[str, str | None], ...]:
    """docker_env.environment as (name, value) pairs: `[NAME, value]` as given; `NAME`, to be copied
    from this environment (EnvSpecError when it is not set, as MLflow refuses it), as (NAME, None):
    the engine is given `-e NAME` and reads the value from its own environment, so a secret never
    stands in the engine's argv (visible in `ps`) or in the run's recorded command."""
    pairs: list[tuple[str, str | None]] = []
    for entry in entries or []:  # type: ignore[attr-defined]
        if isinstance(entry, list):
            pairs.append((str(entry[0]), str(entry[1])))
            continue
        value = os.environ.get(str(entry))
        if value is None:
            raise EnvSpecError(
                f"{label}: docker_env.environment: {entry} is to be copied from this environment, but it is not set",
                hint=f"export {entry}=... before mlkit run, or give it a value in the MLproject: [{entry}, value]",
            )
        pairs.append((str(entry), None))
    return tuple(pairs)


def code_files(project_dir: Path, exclude: Sequence[Path] = ()) -> list[str]:
    """The files --build-image copies (MLflow copies the whole directory): everything but VCS
    data, `mlruns`, byte-code caches and `exclude` (the store, when it is inside the project);
    sorted relative POSIX paths, links kept as links."""
    skip = {os.path.realpath(p) for p in exclude}
    found: list[str] = []
    for root, dirs, files in os.walk(project_dir):
        rel = os.path.relpath(root, project_dir)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        kept = [
            d for d in dirs if d not in _SKIP_DIRS and os.path.realpath(os.path.join(root, d)) not in skip
        ]
        links = [d for d in kept if os.path.islink(os.path.join(root, d))]
        dirs[:] = sorted(d for d in kept if d not in links)
        found += [prefix + n for n in links]
        found += [
            prefix + n for n in files if not n.endswith((".pyc", ".pyo")) and _copyable(os.path.join(root, n))
        ]
    return sorted(found)


def _copyable(path: str) -> bool:
    """A regular file or a link (copied as a link); never a FIFO, socket or device."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) or stat.S_ISLNK(mode)


def code_hash(project_dir: Path, files: Sequence[str]) -> str:
    """sha256 over each file's path, mode bit for executables, and bytes (a link: its target).
    EnvBuildError (exit 73, before the run exists) when a file cannot be read."""
    try:
        return _code_hash(project_dir, files)
    except OSError as exc:
        raise EnvBuildError(
            f"--build-image: cannot read {exc.filename or project_dir}: {exc.strerror}",
            hint="make the project's files readable, or remove the file",
        ) from None


def _code_hash(project_dir: Path, files: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for rel in files:
        path = project_dir / rel
        digest.update(rel.encode("utf-8", "surrogateescape") + b"\0")
        if path.is_symlink():
            digest.update(b"->" + os.readlink(path).encode("utf-8", "surrogateescape"))
        else:
            digest.update(b"x" if os.access(path, os.X_OK) else b"-")
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


# ------------------------------------------------------------------------------ the engine
def _answer(argv: list[str]) -> tuple[int, str]:
    """(exit code, output) of a short engine command; 127 when the binary is missing."""
    try:
        done = proc.run(argv, timeout=_CHECK_TIMEOUT)
    except (MlkitError, OSError) as exc:  # not installed, not executable, hung
        return 127, str(exc)
    return done.returncode, (done.stdout or "") + (done.stderr or "")


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"


def _check_docker() -> tuple[Engine | None, str]:
    """docker, when its daemon answers and is docker (not podman's socket); else (None, why)."""
    if shutil.which("docker") is None:
        return None, "docker is not installed"
    code, out = _answer(["docker", "version", "--format", "{{json .Server}}"])
    if code != 0 or out.strip() in ("", "null"):
        return None, f"the docker daemon does not answer ({_last_line(out)})"
    if "podman" in out.lower():
        return None, "the docker CLI talks to podman's socket (exit codes of failed runs are lost there)"
    code, runtimes = _answer(["docker", "info", "--format", "{{json .Runtimes}}"])
    toolkit = "nvidia" in runtimes or any(
        shutil.which(b) for b in ("nvidia-container-runtime-hook", "nvidia-container-cli")
    )
    problem = None if toolkit else (
        "docker cannot pass GPUs into containers: the NVIDIA Container Toolkit is not installed "
        "(no nvidia runtime, no nvidia-container-cli)"
    )  # fmt: skip
    return Engine("docker", gpu_problem=problem), ""


def _check_podman() -> tuple[Engine | None, str]:
    if shutil.which("podman") is None:
        return None, "podman is not installed"
    code, out = _answer(["podman", "version", "--format", "{{.Client.Version}}"])
    if code != 0:
        return None, f"podman does not work ({_last_line(out)})"
    devices = cdi_gpu_devices()
    problem = None if devices else (
        "podman cannot pass GPUs into containers: no CDI spec for nvidia.com/gpu in "
        + " or ".join(CDI_DIRS) + " (NVIDIA Container Toolkit)"
    )  # fmt: skip
    return Engine("podman", gpu_problem=problem, cdi_devices=devices), ""


def cdi_gpu_devices(dirs: Sequence[str] = CDI_DIRS) -> frozenset[str]:
    """The device names the CDI specs define for kind nvidia.com/gpu (podman's --device names)."""
    # import budget: the YAML loader loads only when podman is checked for GPUs
    from mlkit.yamlsafe import load_yaml

    names: set[str] = set()
    for directory in dirs:
        with contextlib.suppress(OSError):
            for entry in sorted(os.scandir(directory), key=lambda e: e.name):
                if not entry.name.endswith((".yaml", ".yml", ".json")) or not entry.is_file():
                    continue
                try:
                    spec = load_yaml(Path(entry.path), entry.path, EnvSpecError)
                except (MlkitError, OSError):  # another tool's broken spec is not ours to report
                    continue
                if isinstance(spec, dict) and spec.get("kind") == "nvidia.com/gpu":
                    names |= {str(d.get("name")) for d in spec.get("devices") or [] if isinstance(d, dict)}
    return frozenset(names)


def find_engine(choice: str = "auto") -> Engine:
    """The engine `--container-engine` names (`auto`: docker when its daemon answers, else podman).
    EnvBuildError (exit 73) with the fix when none answers: called before the run exists."""
    if choice not in ENGINE_CHOICES:
        raise UsageError(f"--container-engine {choice!r}: unknown engine", hint="use auto, docker or podman")
    reasons = []
    for name in ENGINES if choice == "auto" else (choice,):
        engine, why = _check_docker() if name == "docker" else _check_podman()
        if engine is not None:
            return engine
        reasons.append(why)
    if choice == "docker":
        hint = "start the daemon (systemctl start docker) or point DOCKER_HOST at it; or use --container-engine podman"
    elif choice == "podman":
        hint = "install podman (apt-get install podman runc catatonit) or use --container-engine docker"
    else:
        hint = "install docker or podman (and start the docker daemon), or use --env-manager local"
    raise EnvBuildError(f"docker_env needs a container engine: {'; '.join(reasons)}", hint=hint)


def which_engine(choice: str = "auto") -> str:
    """The engine a dry run shows, without asking it anything: the one named, else the first installed."""
    if choice in ENGINES:
        return choice
    return next((name for name in ENGINES if shutil.which(name)), "docker")


# ------------------------------------------------------------------------------ the image
def _image_facts(engine: str, image: str) -> tuple[str, bool] | None:
    """(id, whether its config sets HOME) of a local image; None when the engine has no such image."""
    code, out = _answer(
        [engine, "image", "inspect", "--format", "{{.Id}}{{range .Config.Env}}\n{{.}}{{end}}", image]
    )
    lines = out.strip().splitlines()
    if code != 0 or not lines:
        return None
    return lines[0].strip(), any(line.startswith("HOME=") for line in lines[1:])


def _derived_id(engine: str, tag: str, base_id: str) -> str | None:
    """The --build-image image's id when it exists and was built on the base image as it is now."""
    fmt = '{{.Id}} {{index .Config.Labels "mlkit.base_image_id"}}'
    code, out = _answer([engine, "image", "inspect", "--format", fmt, tag])
    parts = out.split()
    if code == 0 and len(parts) == 2 and parts[1] == base_id:
        return parts[0]
    return None


def resolve_image(request: ContainerRequest, progress: Progress | None = None) -> tuple[str, str, bool, bool]:
    """(image to run, its id, built now, its config sets HOME): the base image (pulled when
    missing), or with --build-image the derived image (which keeps the base image's environment),
    built under the cache's per-key lock when it is not there."""
    say = progress or (lambda _m: None)
    engine = request.engine.name
    facts = _image_facts(engine, request.image)
    if facts is None:
        say(f"pulling {request.image} with {engine}")
        code, out = _pull(engine, request.image)
        facts = _image_facts(engine, request.image) if code == 0 else None
        if facts is None:
            raise EnvBuildError(
                f"docker_env.image {request.image}: {engine} has no such image and could not pull it: {_last_line(out)}",
                hint=f"check the name, log in to its registry, or build it here ({engine} build -t {request.image} .)",
            )
    base_id, home = facts
    if not request.build_image:
        return request.image, base_id, False, home
    tag = request.derived_tag
    found = _derived_id(engine, tag, base_id)
    if found is not None:
        return tag, found, False, home
    return (*_build_derived(request, tag, base_id, say), home)


def _pull(engine: str, image: str) -> tuple[int, str]:
    try:
        done = proc.run([engine, "pull", image])
    except (MlkitError, OSError) as exc:
        return 1, str(exc)
    return done.returncode, (done.stdout or "") + (done.stderr or "")


def _build_derived(request: ContainerRequest, tag: str, base_id: str, say: Progress) -> tuple[str, str, bool]:
    # import budget: the env cache (its lock and build log) loads only when an image is built
    from mlkit.env import cache

    engine = request.engine.name
    key = f"image-{tag.rsplit(':', 1)[1]}-{engine}"
    with cache.build_lock(key, on_wait=say):
        found = _derived_id(engine, tag, base_id)
        if found is not None:  # another run built it while we waited
            return tag, found, False
        log = cache.BuildLog(key, say)
        remove_dead_build_contexts(_lock_parent(cache))
        context = Path(tempfile.mkdtemp(prefix=f"{BUILD_PREFIX}{os.getpid()}-", dir=_lock_parent(cache)))
        try:
            log.step(f"build {tag} from {request.image} with {engine} (--build-image)")
            _write_context(context, request, base_id)
            log.run([engine, "build", "-t", tag, "-f", str(context / "Dockerfile"), str(context)])
        except cache.CommandFailed as exc:
            raise EnvBuildError(
                f"--build-image: {engine} build of {tag} failed: {exc.last_error_line()}",
                hint=f"see the build log: {log.path}",
            ) from None
        except OSError as exc:  # copying the project into the build context (a full disk, say)
            raise EnvBuildError(
                f"--build-image: cannot copy the project into the build context: {exc.strerror or exc}",
                hint=f"check the space and rights under {context.parent}",
            ) from None
        finally:
            log.close()
            shutil.rmtree(context, ignore_errors=True)
    built = _derived_id(engine, tag, base_id)
    if built is None:
        raise EnvBuildError(f"--build-image: {engine} built {tag} but cannot find it", hint=f"see {log.path}")
    return tag, built, True


BUILD_PREFIX = ".build-"  # <env root>/.build-<pid>-<random>: one --build-image build's context


def remove_dead_build_contexts(root: Path) -> list[Path]:
    """Remove the build contexts (a copy of a project each) whose build process is gone: a build
    SIGKILLed before its `finally` left its context behind. A context whose process still lives is
    another build's, left alone. Returns what was removed."""
    from mlkit import procid  # import budget: only when an image is built

    removed: list[Path] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for entry in entries:
        pid = entry.name[len(BUILD_PREFIX) :].split("-", 1)[0]
        if (
            not entry.name.startswith(BUILD_PREFIX)
            or not pid.isdigit()
            or not entry.is_dir(follow_symlinks=False)
        ):
            continue
        if procid.start_time(int(pid)) is None:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed


def _lock_parent(cache_mod: object) -> Path:
    return Path(cache_mod.make_root())  # type: ignore[attr-defined]


def _write_context(context: Path, request: ContainerRequest, base_id: str) -> None:
    """MLflow's build context: the project under code/ and a Dockerfile that copies it to CODE_DIR."""
    code = context / "code"
    code.mkdir()
    for rel in code_files(request.project_dir, request.exclude):
        src, dst = request.project_dir / rel, code / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        else:
            shutil.copy2(src, dst)
    (context / "Dockerfile").write_text(
        f"FROM {request.image}\n"
        f'LABEL mlkit.base_image_id="{base_id}" mlkit.code_hash="{request.code_hash or ""}"\n'
        f"COPY code/ {CODE_DIR}/\n"
        f"WORKDIR {CODE_DIR}/\n"
    )


# ------------------------------------------------------------------------------ the argv (pure)
def container_name(run_id: str, node_rank: int = 0) -> str:
    """`mlkit-<run id>`; a run's node other than the first (`--node-rank R`, which may run on the
    same host as node 0) gets `mlkit-<run id>-node<R>`."""
    return NAME_PREFIX + run_id + (f"-node{node_rank}" if node_rank else "")


def gpu_args(env: ContainerEnv, uuids: Sequence[str]) -> list[str]:
    """The flags that pass exactly these GPUs: docker `--gpus "device=..."`, podman CDI devices.
    EnvBuildError when the engine cannot (no NVIDIA Container Toolkit, no CDI name for a GPU)."""
    if not uuids:
        return []
    if env.gpu_problem:
        raise EnvBuildError(
            env.gpu_problem,
            hint="install the NVIDIA Container Toolkit (nvidia-ctk), or run with --gpus none",
        )
    if env.engine == "docker":  # the quotes keep the commas inside one --gpus field (docker reads CSV)
        return ["--gpus", '"device=' + ",".join(uuids) + '"']
    missing = [u for u in uuids if u not in env.cdi_devices]
    if missing:
        raise EnvBuildError(
            f"podman: the CDI specs in {' or '.join(CDI_DIRS)} name no nvidia.com/gpu device {missing[0]}",
            hint="generate them with GPU UUIDs: nvidia-ctk cdi generate --device-name-strategy=uuid "
            "--output=/etc/cdi/nvidia.yaml",
        )
    return [a for u in uuids for a in ("--device", f"nvidia.com/gpu={u}")]


def engine_argv(
    env: ContainerEnv,
    command: Sequence[str],
    variables: Mapping[str, str | None],
    *,
    run_id: str,
    mounts: Sequence[Path],
    gpu_uuids: Sequence[str] = (),
    node_rank: int = 0,
) -> list[str]:
    """`<engine> run ...` that runs `command` in the container, with `mounts` (the store, and the
    run's artifact directory when it lies elsewhere) at their own paths, so the run's tracking and
    artifact URIs hold inside too, and `variables` (then docker_env.environment) set."""
    argv = [env.engine, "run", "--rm", "--init", "--name", container_name(run_id, node_rank)]
    argv += ["--label", f"mlkit.run_id={run_id}"]
    if env.user:
        argv += ["--user", env.user]
    argv += ["-w", CODE_DIR]
    for path in mounts:
        argv += ["-v", f"{path}:{path}"]
    if env.mount_code:
        argv += ["-v", f"{env.project_dir}:{CODE_DIR}"]
    for volume in env.volumes:
        argv += ["-v", volume]
    merged: dict[str, str | None] = {k: v for k, v in variables.items() if v is not None}
    merged.update(env.environment)  # MLflow: the project's own entries win
    if (env.user and not env.user.startswith("0:") and not env.image_home and "HOME" not in merged
            and not names_home(env.extra_args)):  # fmt: skip
        # the engine gives a uid the image's passwd does not know HOME=/, which that user cannot
        # write: whatever caches under ~ (pip, torch.hub, matplotlib, Hugging Face) fails there
        merged["HOME"] = CONTAINER_HOME
    for key, value in merged.items():
        argv += ["-e", key if value is None else f"{key}={value}"]  # None: the engine copies it
    if not gpu_uuids:  # under docker's nvidia runtime an image's NVIDIA_VISIBLE_DEVICES=all shows every GPU
        argv += ["-e", "NVIDIA_VISIBLE_DEVICES=void"]
    argv += gpu_args(env, gpu_uuids)
    argv += env.extra_args
    argv.append(env.image)
    return argv + list(command)


def inner_command(argv: Sequence[str], shell: str | None) -> list[str]:
    """The command run inside: a shell command through the image's `sh` (images need not have bash)."""
    if shell is not None:
        return ["sh", "-c", shell]
    return list(argv)
