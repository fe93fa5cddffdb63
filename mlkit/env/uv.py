"""The `uv` manager: a virtualenv made with `uv venv`, filled with `uv pip install`. No pyenv.

Where packages come from follows the user's settings: `UV_INDEX_URL` / `PIP_INDEX_URL`,
`UV_EXTRA_INDEX_URL` / `PIP_EXTRA_INDEX_URL`, `UV_FIND_LINKS` / `PIP_FIND_LINKS`, and
`MLKIT_FIND_LINKS` (a local wheelhouse). `MLKIT_OFFLINE=1` (or `UV_OFFLINE=1`) never touches the
network: uv's cache and local find-links only. Python itself is found on the system
(`UV_PYTHON_DOWNLOADS=never` unless the user set it): the running interpreter when it matches the
spec, else uv's discovery (uv-managed, pyenv versions on PATH, /usr/bin ...).

mlkit inside the env (the "runtime overlay"): the env gets `<env>/.mlkit-runtime/` holding a link
to the running mlkit package, a copy of what `mlkit.tracking` needs at runtime (PyYAML's pure
Python package, loaded without its C extension where the ABI differs) and an `mlkit` dist-info,
plus a `mlkit-runtime.pth` in site-packages that appends that directory to `sys.path`. `.pth`
entries come *after* site-packages, so a package the project installs itself (its own PyYAML)
always wins, and nothing else of the host leaks in. This needs no index, no build backend and no
network, and the link means source edits to mlkit are seen (like an editable install).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from mlkit import proc as procs
from mlkit.env.cache import RUNTIME_DIR, BuildLog, CommandFailed, disk_full, link_runtime
from mlkit.env.lockfile import current_platform, read_lockfile, require_platform
from mlkit.env.spec import EnvSpec, python_matches, python_request
from mlkit.errors import EnvBuildError, MlkitError

RUNTIME_PTH = "mlkit-runtime.pth"
# top-level modules mlkit.tracking needs at runtime besides the standard library: PyYAML (its C
# speedups only when the env's Python has the host's ABI) and psutil (abi3 extension: any CPython 3)
RUNTIME_MODULES = ("yaml", "psutil")


def find_uv() -> str:
    try:
        import uv  # the PyPI package (the pinned binary's finder); optional: PATH is the fallback

        return uv.find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found:
            return found
    raise EnvBuildError("uv is not installed", hint="pip install uv (mlkit depends on it)")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() not in ("", "0", "false", "no")


def offline() -> bool:
    return _truthy(os.environ.get("MLKIT_OFFLINE")) or _truthy(os.environ.get("UV_OFFLINE"))


def uv_environ() -> dict[str, str]:
    """The environment for uv: the user's, with pip's index settings translated for uv."""
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)  # never let uv pick up the caller's venv
    env.pop("CONDA_PREFIX", None)
    env.setdefault("UV_PYTHON_DOWNLOADS", "never")
    env.setdefault("UV_NO_PROGRESS", "1")
    if "PIP_INDEX_URL" in env and "UV_INDEX_URL" not in env and "UV_DEFAULT_INDEX" not in env:
        env["UV_INDEX_URL"] = env["PIP_INDEX_URL"]
    if "PIP_EXTRA_INDEX_URL" in env and "UV_EXTRA_INDEX_URL" not in env:
        env["UV_EXTRA_INDEX_URL"] = env["PIP_EXTRA_INDEX_URL"]
    if _truthy(env.get("PIP_NO_INDEX")) and "UV_NO_INDEX" not in env:
        env["UV_NO_INDEX"] = "1"
    return env


def source_args() -> list[str]:
    """--find-links / --offline flags from MLKIT_FIND_LINKS and PIP_FIND_LINKS (uv reads UV_*)."""
    args: list[str] = []
    for var in ("MLKIT_FIND_LINKS", "PIP_FIND_LINKS"):
        for item in re.split(r"[\s" + re.escape(os.pathsep) + r"]+", os.environ.get(var, "")):
            if item:
                args += ["--find-links", item]
    if offline():
        args.append("--offline")
    return args


def _candidates() -> list[tuple[str, Path]]:
    """(version or name hint, path) of interpreters on this system, cheapest first; no pyenv calls.

    PATH entries (pyenv *shims* skipped: they fail for versions not made global), installed pyenv
    versions, uv-managed Pythons, /usr/bin and /usr/local/bin.
    """
    found: list[tuple[str, Path]] = []
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d and "shims" not in Path(d).parts]
    dirs += ["/usr/local/bin", "/usr/bin"]
    for d in dict.fromkeys(dirs):
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for name in sorted(names, reverse=True):
            m = re.fullmatch(r"python(\d\.\d+)", name)
            if m:
                found.append((m.group(1), Path(d) / name))
    roots = [Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"]
    uv_dir = os.environ.get("UV_PYTHON_INSTALL_DIR") or str(
        Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "uv" / "python"
    )
    roots.append(Path(uv_dir))
    for root in roots:
        try:
            entries = sorted(os.listdir(root), reverse=True)
        except OSError:
            continue
        for entry in entries:
            m = re.search(r"(\d+\.\d+\.\d+)", entry)
            exe = root / entry / "bin" / "python3"
            if m and exe.exists():
                found.append((m.group(1), exe))
    return found


def find_interpreter(spec_python: str) -> str | None:
    """An interpreter on this system whose version satisfies the spec's python, or None."""
    for hint, exe in _candidates():
        if hint.count(".") == 1:  # pythonX.Y on PATH: ask it for its full version
            major_minor_ok = python_matches(spec_python, hint + ".0") or python_matches(spec_python, hint)
            if not major_minor_ok and not spec_python.startswith(hint):
                continue
            try:
                version = interpreter_info(exe)["version"]
            except EnvBuildError:
                continue
        else:
            version = hint
        if python_matches(spec_python, version):
            return str(exe)
    return None


def interpreter_info(python: Path | str) -> dict:
    """Version and site-packages of an interpreter (one short subprocess)."""
    code = (
        "import json,sys,sysconfig;print(json.dumps({'version':'%d.%d.%d'%sys.version_info[:3],"
        "'purelib':sysconfig.get_paths()['purelib'],'stdlib':sysconfig.get_paths()['stdlib'],"
        "'executable':sys.executable}))"
    )
    try:
        out = procs.run(procs.python_code_argv(str(python), code), capture_output=True, text=True, timeout=60)
    except MlkitError as exc:  # the interpreter does not exist / cannot be executed / hangs
        raise EnvBuildError(f"{python}: cannot run this interpreter: {exc.message}") from None
    if out.returncode != 0:
        raise EnvBuildError(f"{python}: cannot run this interpreter: {out.stderr.strip()[-200:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def build_venv(spec: EnvSpec, path: Path, log: BuildLog, project_dir: Path) -> dict:
    """Create the venv at `path` (its final place) and install everything; returns marker info."""
    uv = find_uv()
    env = uv_environ()
    current = ".".join(map(str, sys.version_info[:3]))
    python_arg: str | None
    if spec.python is None or python_matches(spec.python, current):
        python_arg = sys.executable
    else:
        python_arg = find_interpreter(spec.python) or python_request(spec.python)
        if python_arg is None:
            raise EnvBuildError(f"{spec.file_label}: python {spec.python!r} cannot be given to uv")
    log.step(f"uv venv with python {python_arg}")
    try:
        log.run([uv, "venv", str(path), "--python", python_arg, "--no-project"], env=env)
    except CommandFailed as exc:
        low = exc.output.lower()
        if any(
            t in low
            for t in ("no interpreter found", "no python", "invalid version request", "failed to inspect")
        ):
            raise EnvBuildError(
                f"{spec.file_label}: no Python interpreter matching {spec.python} found on this system",
                hint=f"install one (e.g. `uv python install {python_arg}`) or set UV_PYTHON_DOWNLOADS=automatic"
                " to let uv download it",
            ) from None
        raise
    python = path / "bin" / "python"
    info = interpreter_info(python)
    install_requirements(spec, python, log, project_dir, env=env)
    install_runtime(Path(info["purelib"]), path, info["version"])
    return {"python": str(python), "python_version": info["version"]}


def install_requirements(
    spec: EnvSpec, python: Path, log: BuildLog, project_dir: Path, *, env: dict[str, str] | None = None
) -> None:
    """build_dependencies, then the pip part: the lockfile's pip entries when there is one."""
    env = env or uv_environ()
    build = list(spec.build_dependencies)
    if any(b.strip().lower() == "pip" for b in build):
        # unpinned pip: the wheel the interpreter bundles for ensurepip, no index needed
        build = [b for b in build if b.strip().lower() != "pip"]
        stdlib = Path(interpreter_info(python).get("stdlib", ""))
        bundled = sorted((stdlib / "ensurepip" / "_bundled").glob("pip-*.whl"))
        if bundled:
            log.step(f"uv pip install {bundled[-1].name} (the interpreter's bundled pip)")
            _uv_pip_install(python, [str(bundled[-1])], log, project_dir, env, label=spec.file_label)
        else:
            log.step("python -m ensurepip")
            log.run(procs.python_module_argv(str(python), "ensurepip", "--default-pip"), env=env)
    if build:
        log.step("uv pip install (build dependencies) " + " ".join(build))
        _uv_pip_install(python, build, log, project_dir, env, label=spec.file_label)
    if spec.lockfile is not None:
        locked = read_lockfile(spec.lockfile)
        require_platform(locked, current_platform(), project_dir)
        pip = [p for p in locked.packages if p.manager == "pip" and p.platform == current_platform()]
        if pip:
            lines = [f"{p.name} @ {p.url}" + (f" --hash=sha256:{p.sha256}" if p.sha256 else "") for p in pip]
            log.step(f"uv pip install {len(lines)} locked pip packages (no resolution)")
            extra = ["--no-deps"] + (["--require-hashes"] if all(p.sha256 for p in pip) else [])
            _uv_pip_install(python, lines, log, project_dir, env, extra, label=spec.lockfile.name)
        return
    lines = [p.text for p in spec.pip if not p.constraint]
    constraints = [p.text for p in spec.pip if p.constraint]
    if lines:
        log.step(f"uv pip install {len(lines)} requirements from {spec.file_label}")
        _uv_pip_install(python, lines, log, project_dir, env, constraints=constraints, label=spec.file_label)


def _uv_pip_install(
    python: Path,
    lines: list[str],
    log: BuildLog,
    project_dir: Path,
    env: dict[str, str],
    extra: list[str] | None = None,
    constraints: list[str] | None = None,
    label: str = "requirements",
) -> None:
    with tempfile.TemporaryDirectory(prefix="mlkit-req-") as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text("\n".join(lines) + "\n", encoding="utf-8")
        log.write(req.read_text(encoding="utf-8"))
        argv = [find_uv(), "pip", "install", "--python", str(python), "-r", str(req)]
        if constraints:
            con = Path(tmp) / "constraints.txt"
            con.write_text("\n".join(constraints) + "\n", encoding="utf-8")
            argv += ["-c", str(con)]
        argv += source_args() + (extra or [])
        try:
            log.run(argv, env=env, cwd=project_dir)  # relative paths in requirements: the project's
        except CommandFailed as exc:
            if exc.disk_full:
                raise disk_full(f"{label}: uv pip install failed", log.path) from None
            raise EnvBuildError(_pip_failure(exc, label)) from None


def _pip_failure(exc: CommandFailed, label: str) -> str:
    lines = [ln.strip().lstrip("×╰─▶ ").strip() for ln in exc.output.splitlines() if ln.strip()]
    lines = [ln[len("cause:") :].strip() if ln.startswith("cause:") else ln for ln in lines]
    low = exc.output.lower()
    because = next((ln for ln in lines if ln.lower().startswith("because")), None)
    if because is not None or "no solution found" in low:
        return f"{label}: the requirements cannot be satisfied: {because or exc.last_error_line()}"
    if any(t in low for t in ("offline", "network", "dns", "connect", "failed to fetch")):
        return (
            f"{label}: no network (and not in uv's cache or a wheelhouse; set MLKIT_FIND_LINKS): "
            f"{exc.last_error_line()}"
        )
    return f"{label}: uv pip install failed: {exc.last_error_line()}"


def install_runtime(site_packages: Path, env_path: Path, python_version: str) -> None:
    """Make `import mlkit` work inside the env (see the module docstring)."""

    runtime = env_path / RUNTIME_DIR
    runtime.mkdir(parents=True, exist_ok=True)
    package = Path(__file__).resolve().parent.parent  # the mlkit package this code runs from
    link_runtime(env_path)  # <runtime>/mlkit -> package
    abi = "cpython-" + "".join(python_version.split(".")[:2])
    for name in RUNTIME_MODULES:
        _copy_module(name, runtime, abi)
    found = re.search(r'__version__ = "([^"]+)"', (package / "__init__.py").read_text(encoding="utf-8"))
    version = found.group(1) if found else "0"
    dist = runtime / f"mlkit-{version}.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: mlkit\nVersion: {version}\n", encoding="utf-8"
    )
    (dist / "INSTALLER").write_text("mlkit-runtime\n", encoding="utf-8")
    site_packages.mkdir(parents=True, exist_ok=True)
    (site_packages / RUNTIME_PTH).write_text(str(runtime) + "\n", encoding="utf-8")


def _copy_module(name: str, dest: Path, abi: str) -> None:
    """Copy a top-level module or package; extension modules only when the env can load them."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        return
    origin = Path(spec.origin)

    def skip(_dir: str, names: list[str]) -> list[str]:
        out = [n for n in names if n == "__pycache__"]
        for n in names:
            if n.endswith((".so", ".pyd", ".dylib")) and ".abi3." not in n and f".{abi}-" not in n:
                out.append(n)
        return out

    if spec.submodule_search_locations:  # a package
        try:
            shutil.copytree(origin.parent, dest / name, dirs_exist_ok=True, ignore=skip, copy_function=_copy)
        except _CopyFailed as failed:  # the first error as it is (copytree would list them all as text)
            raise failed.error from None
    elif not skip("", [origin.name]):
        shutil.copy2(origin, dest / origin.name)


class _CopyFailed(Exception):  # not an OSError: copytree lets it through at once
    def __init__(self, error: OSError):
        super().__init__(str(error))
        self.error = error


def _copy(src: str, dst: str) -> object:
    try:
        return shutil.copy2(src, dst)
    except OSError as exc:
        raise _CopyFailed(exc) from None
