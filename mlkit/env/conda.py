"""The `conda` manager: solve with py-rattler, install with py-rattler, then the pip part with uv.

No conda binary is needed. Virtual packages are detected (`__glibc`, `__linux`, `__cuda` from the
NVIDIA driver when there is one; `CONDA_OVERRIDE_CUDA` etc. are honoured), so GPU builds resolve
on a GPU machine. With a `conda-lock.yml` next to the conda.yaml nothing is solved: the locked
records of this platform are installed as they are. `--conda-exe conda|mamba|micromamba|PATH`
hands the conda part to that binary instead (`create -p PREFIX --file ...`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path

from mlkit import settings
from mlkit.env.cache import BuildLog, CommandFailed, make_checked_dir
from mlkit.env.lockfile import current_platform, locked_records, read_lockfile, require_platform
from mlkit.env.spec import EnvSpec, dep_name
from mlkit.env.uv import install_requirements, install_runtime, interpreter_info
from mlkit.errors import EnvBuildError, EnvSpecError, UsageError

DEFAULT_CHANNELS = ("conda-forge",)


def package_cache_dir() -> Path:
    """Downloaded and extracted conda packages, shared by every env (installs hard-link from it)."""
    return _checked_cache_dir() / "conda-pkgs"


def repodata_cache_dir() -> Path:
    return _checked_cache_dir() / "repodata"


def _checked_cache_dir() -> Path:
    """The cache dir, which nobody else may write: a package planted in conda-pkgs/ is installed
    as it is (rattler does not check an extracted package against its hash)."""
    return make_checked_dir(
        settings.cache_dir().absolute(),
        "MLKIT_CACHE_DIR",
        "a conda package your environments would install",
        0o700,
    )


def channel_url(channel: str, base: Path) -> str:
    """Local paths (absolute or relative to the conda.yaml) become file:// URLs; names stay names."""
    if "://" in channel:
        return channel
    if channel.startswith(("/", ".", "~")):
        path = Path(channel).expanduser()
        if not path.is_absolute():
            path = (base / path).resolve()
        return path.as_uri()
    return channel


def detect_virtual_packages() -> list:
    """This machine's virtual packages (generic form), CONDA_OVERRIDE_* honoured."""
    import rattler  # the import budget: rattler is heavy; only solves and installs load it
    from rattler.virtual_package import VirtualPackageOverrides

    try:
        found = rattler.VirtualPackage.detect(VirtualPackageOverrides.from_env())
    except Exception as exc:
        raise EnvBuildError(f"cannot detect this machine's virtual packages: {exc}") from None
    return [vp.into_generic() for vp in found]


def describe_virtual_packages(vps: list) -> str:
    return ",".join(f"{vp.name.normalized}={vp.version}" for vp in vps)


def cuda_of(vps: list) -> str | None:
    return next((str(vp.version) for vp in vps if vp.name.normalized == "__cuda"), None)


def solve(spec: EnvSpec, platform: str, virtual_packages: list) -> list:
    """Solve the spec's conda part for one platform; RepoDataRecords."""
    import rattler  # the import budget: rattler is heavy; only solves and installs load it

    base = spec.source.parent
    channels = [channel_url(c, base) for c in (spec.channels or DEFAULT_CHANNELS)]
    specs = list(spec.conda_deps)
    if spec.pip and not any(dep_name(d) == "python" for d in specs):
        raise EnvSpecError(
            f"{spec.file_label}: dependencies: a pip section needs python in the conda dependencies",
            hint="add e.g. 'python=3.11' to dependencies",
        )
    gateway = rattler.Gateway(cache_dir=repodata_cache_dir())
    try:
        return asyncio.run(
            rattler.solve(
                channels,
                specs,
                gateway=gateway,
                platforms=[rattler.Platform(platform), rattler.Platform("noarch")],
                virtual_packages=virtual_packages,
            )
        )
    except Exception as exc:
        raise _solve_error(spec, exc, channels) from None


def brief(text: str, limit: int = 300) -> str:
    """An error's text on one line: rattler's "Caused by:" chain joined with ": ", cut at a word
    boundary (with "…") when longer than `limit`, never in the middle of a word."""
    parts = [" ".join(p.split()) for p in text.replace("\nCaused by:", "\n").splitlines()]
    line = ": ".join(p for p in parts if p)
    if len(line) <= limit:
        return line
    cut = line[: limit - 1]
    return (cut[: cut.rfind(" ")] if " " in cut else cut).rstrip(" :,;(") + "…"


def _solve_error(spec: EnvSpec, exc: Exception, channels: list[str]) -> EnvBuildError:
    kind = type(exc).__name__
    detail = brief(str(exc), 10_000)
    label = spec.file_label
    if kind == "SolverError":
        return EnvBuildError(
            f"{label}: cannot be solved: {brief(detail)}",
            hint="relax the version specs, or add the channel that has the package",
        )
    if kind in ("FetchRepoDataError", "GatewayError", "IoError", "InvalidChannelError"):
        low = detail.lower()
        if "dns" in low or "connect" in low or "network" in low or "error sending request" in low:
            return EnvBuildError(
                f"{label}: no network: cannot fetch the channels {', '.join(channels)} ({brief(detail, 240)})",
                hint="use a local file:// channel, or lock on a connected machine (mlkit env lock)",
            )
        return EnvBuildError(
            f"{label}: channel cannot be read: {brief(detail)}",
            hint="check the channels list; a local channel needs noarch/repodata.json (rattler-index)",
        )
    return EnvBuildError(f"{label}: solving failed ({kind}): {brief(detail)}")


def install_records(records: list, prefix: Path, log: BuildLog) -> None:
    import rattler  # the import budget: rattler is heavy; only solves and installs load it

    log.step(f"rattler install {len(records)} packages")
    for r in records:
        log.write(f"  {r.name.normalized} {r.version} {r.build} {r.url}")
    try:
        asyncio.run(
            rattler.install(
                records,
                prefix,
                cache_dir=package_cache_dir(),
                show_progress=False,
                execute_link_scripts=False,
            )
        )
    except Exception as exc:
        detail = brief(str(exc), 10_000)
        log.write(f"install failed: {type(exc).__name__}: {detail}")
        raise EnvBuildError(f"installing conda packages failed: {brief(detail)}") from None


def build_prefix(
    spec: EnvSpec, path: Path, log: BuildLog, project_dir: Path, *, conda_exe: str | None = None
) -> dict:
    """Create the conda env at `path` (its final place); returns marker info."""
    info: dict = {}
    platform = current_platform()
    vps = detect_virtual_packages()
    info["virtual_packages"] = describe_virtual_packages(vps)
    if spec.lockfile is not None:
        locked = read_lockfile(spec.lockfile)
        require_platform(locked, platform, project_dir)
        lock_vps = locked.virtual_packages.get(platform)
        info["lock_virtual_packages"] = lock_vps or ""
        info["lock_cuda"] = _cuda_from_text(lock_vps)
        if conda_exe:
            _create_with_exe(conda_exe, path, log, explicit=locked.explicit(platform))
        else:
            records = locked_records(locked, platform)
            log.step(f"installing {len(records)} locked packages from {spec.lockfile.name} (no solve)")
            install_records(records, path, log)
    elif conda_exe:
        _create_with_exe(conda_exe, path, log, env_yaml=_conda_only_yaml(spec))
    else:
        log.step(f"solving {spec.file_label} for {platform} ({info['virtual_packages']})")
        records = solve(spec, platform, vps)
        install_records(records, path, log)
    python = path / "bin" / "python"
    if python.exists():
        pyinfo = interpreter_info(python)
        install_requirements(spec, python, log, project_dir)
        install_runtime(Path(pyinfo["purelib"]), path, pyinfo["version"])
        info.update(python=str(python), python_version=pyinfo["version"])
    elif spec.pip:
        raise EnvBuildError(f"{spec.file_label}: the environment has no python for the pip section")
    return info


def _cuda_from_text(text: str | None) -> str | None:
    for item in (text or "").split(","):
        name, _, version = item.partition("=")
        if name == "__cuda":
            return version
    return None


def resolve_conda_exe(conda_exe: str) -> str:
    candidate = Path(conda_exe).expanduser()
    if os.sep in conda_exe and candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(conda_exe)
    if found:
        return found
    raise UsageError(
        f"--conda-exe {conda_exe}: not found" + ("" if os.sep in conda_exe else " on PATH"),
        hint="install it, give its full path, or leave --conda-exe out to use the built-in rattler",
    )


def _conda_only_yaml(spec: EnvSpec) -> str:
    import yaml  # the import budget: yaml loads only for a --conda-exe build

    doc = {
        "name": spec.name or "mlkit",
        "channels": [channel_url(c, spec.source.parent) for c in (spec.channels or DEFAULT_CHANNELS)],
        "dependencies": list(spec.conda_deps),
    }
    return yaml.safe_dump(doc, sort_keys=False)


def _create_with_exe(
    conda_exe: str, path: Path, log: BuildLog, *, explicit: str | None = None, env_yaml: str | None = None
) -> None:
    exe = resolve_conda_exe(conda_exe)
    flavour = Path(exe).name
    with tempfile.TemporaryDirectory(prefix="mlkit-conda-") as tmp:
        if explicit is not None:
            file = Path(tmp) / "explicit.txt"
            file.write_text(explicit, encoding="utf-8")
            argv = [exe, "create", "--yes", "-p", str(path), "--file", str(file)]
        else:
            file = Path(tmp) / "environment.yml"
            file.write_text(env_yaml or "", encoding="utf-8")
            if flavour.startswith("micromamba"):
                argv = [exe, "create", "--yes", "-p", str(path), "--file", str(file)]
            else:
                argv = [exe, "env", "create", "-p", str(path), "--file", str(file)]
        log.step(f"{flavour} creating the environment")
        try:
            log.run(argv)
        except CommandFailed as exc:
            raise EnvBuildError(f"{flavour} create failed: {exc.last_error_line()}") from None
