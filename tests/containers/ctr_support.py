"""Real container engines for the `container` tests, set up without systemd or a registry.

podman: Debian's podman with runc, a containers.conf and storage of its own in a scratch dir
(CONTAINERS_CONF, CONTAINERS_STORAGE_CONF: the clean-up never touches the host's other containers
and images); this machine kind has hybrid cgroups (crun refuses them) and no CAP_SYS_RESOURCE (podman's default
ulimits cannot be set). docker: dockerd started here on private paths (DOCKER_HOST), stopped at
the end. The base image is the host's /usr/bin/python3.11 with its stdlib and the libraries it
links, plus a static busybox for /bin/sh, imported as a tar (no pull). See
../shared/recipes/containers.md for the recipe these follow.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sysconfig
import tarfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

BASE_TAG = "localhost/mlkit-test-base:py3"
CONTAINERS_CONF = """\
[containers]
# no CAP_SYS_RESOURCE here: podman's rootful defaults (1048576 / 4194304) make runc's setrlimit fail
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"          # crun 1.8 refuses hybrid cgroups
cgroup_manager = "cgroupfs"
events_logger = "file"
"""
_BUSYBOX_APPLETS = (
    "sh ls cat echo env id sleep touch mkdir rm cp mv stat true false kill ps grep sed head tail wc"
).split()
# C extensions of packages mounted into the container (MLflow's pydantic-core, ...) need these too
_EXTRA_LIBS = (
    "libgcc_s.so",
    "libstdc++.so",
    "librt.so",
    "libdl.so",
    "libpthread.so",
    "libutil.so",
    "libresolv.so",
)
_STDLIB_SKIP = ("test", "idlelib", "tkinter", "dist-packages", "site-packages", "__pycache__")


def _ldd(paths: list[str]) -> set[str]:
    libs: set[str] = set()
    out = subprocess.run(["ldd", *paths], capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
            libs.add(parts[2])
        elif parts and parts[0].startswith("/") and not parts[0].endswith(":"):
            libs.add(parts[0])
    return libs


def _add(tar: tarfile.TarFile, host: str, arc: str) -> None:
    info = tar.gettarinfo(host, arc)
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    if info.isreg():
        with open(host, "rb") as fh:
            tar.addfile(info, fh)
    else:
        tar.addfile(info)


def _dir(tar: tarfile.TarFile, arc: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(arc)
    info.type, info.mode = tarfile.DIRTYPE, mode
    tar.addfile(info)


def _link(tar: tarfile.TarFile, arc: str, target: str) -> None:
    info = tarfile.TarInfo(arc)
    info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
    tar.addfile(info)


def _file(tar: tarfile.TarFile, arc: str, data: bytes) -> None:
    import io

    info = tarfile.TarInfo(arc)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def base_rootfs_tar(path: Path) -> Path:
    """A tar of a tiny root filesystem: Debian's python3.11 from this host and a static busybox."""
    python = "/usr/bin/python3.11"
    stdlib = "/usr/lib/python3.11"
    dynload = [str(p) for p in Path(stdlib, "lib-dynload").glob("*.so")]
    with tarfile.open(path, "w") as tar:
        for d in ("bin", "usr", "usr/bin", "usr/lib", "lib64", "etc", "proc", "sys", "dev", "root", "mlflow"):
            _dir(tar, d)
        _dir(tar, "tmp", 0o1777)
        _link(tar, "lib", "usr/lib")
        _add(tar, python, "usr/bin/python3.11")
        _link(tar, "usr/bin/python3", "python3.11")
        _link(tar, "usr/bin/python", "python3.11")
        _add(tar, "/bin/busybox", "bin/busybox")
        for applet in _BUSYBOX_APPLETS:
            _link(tar, f"bin/{applet}", "busybox")
        for root, dirs, files in os.walk(stdlib):
            dirs[:] = sorted(d for d in dirs if d not in _STDLIB_SKIP)
            rel = os.path.relpath(root, "/")
            _dir(tar, rel)
            for name in sorted(files):
                if not name.endswith((".pyc", ".pyo")):
                    _add(tar, os.path.join(root, name), os.path.join(rel, name))
        made: set[str] = set()
        extra = [
            str(p)
            for p in Path("/usr/lib/x86_64-linux-gnu").glob("lib*.so.*")
            if p.name.startswith(_EXTRA_LIBS)
        ]
        for lib in sorted(_ldd([python, *dynload]) | set(extra)):
            real = os.path.realpath(lib)
            for arc in {real.lstrip("/"), ("/usr" + lib if lib.startswith("/lib/") else lib).lstrip("/")}:
                parent = os.path.dirname(arc)
                for i in range(1, parent.count("/") + 2):
                    sub = "/".join(parent.split("/")[:i])
                    if sub and sub not in made and sub not in ("lib", "usr", "usr/lib", "lib64"):
                        made.add(sub)
                        _dir(tar, sub)
                if arc in made:
                    continue
                made.add(arc)
                if arc == real.lstrip("/"):
                    _add(tar, real, arc)
                else:
                    _link(tar, arc, real)
        _file(tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/tmp:/bin/sh\n")
        _file(tar, "etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    return path


def import_image(engine: str, env: dict[str, str], tar: Path, tag: str = BASE_TAG) -> None:
    subprocess.run(
        [engine, "import", "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
         "--change", 'CMD ["/bin/sh"]', str(tar), tag],
        env=env, check=True, capture_output=True, timeout=120,
    )  # fmt: skip


def podman_env(work: Path) -> dict[str, str] | None:
    """The variables that make podman work here (None: podman is not installed), with storage of
    its own under `work`: podman's default storage is the whole host's, and the session's clean-up
    would remove another session's (or a real user's) mlkit containers and images there."""
    if not shutil.which("podman") or not shutil.which("runc"):
        return None
    store = work / "podman"
    conf = work / "containers.conf"
    conf.write_text(CONTAINERS_CONF + f'tmp_dir = "{store / "tmp"}"\n')
    storage = work / "storage.conf"
    storage.write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{store / "root"}"\nrunroot = "{store / "run"}"\n'
    )
    return {"CONTAINERS_CONF": str(conf), "CONTAINERS_STORAGE_CONF": str(storage)}


def podman_stop(env: dict[str, str], work: Path) -> None:
    """Remove the session's podman storage: its containers and images (no mount is left), then its files."""
    for argv in (["podman", "rm", "-a", "-f"], ["podman", "rmi", "-a", "-f"]):
        subprocess.run(argv, env=env, capture_output=True, timeout=120)
    shutil.rmtree(work / "podman", ignore_errors=True)


class Dockerd:
    """dockerd on private paths under `work`, for the test session."""

    def __init__(self, work: Path):
        self.work = work
        self.sock = work / "docker.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        return {"DOCKER_HOST": f"unix://{self.sock}"}

    def start(self, timeout: float = 30) -> str | None:
        """Start it; None when it answers, else why not."""
        if not shutil.which("dockerd") or not shutil.which("docker"):
            return "dockerd or docker is not installed (Debian: docker.io)"
        log = open(self.work / "dockerd.log", "wb")  # noqa: SIM115 - closed with the daemon
        self.proc = subprocess.Popen(
            ["dockerd", "--data-root", str(self.work / "docker-data"), "--exec-root",
             str(self.work / "docker-exec"), "--pidfile", str(self.work / "dockerd.pid"),
             "-H", f"unix://{self.sock}",
             # no docker0 bridge, no iptables chains: nothing left on the host, no clash with
             # another dockerd; containers have no network (there is no registry to reach anyway)
             "--bridge", "none", "--iptables=false"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"dockerd exited with {self.proc.returncode}: see {self.work / 'dockerd.log'}"
            done = subprocess.run(["docker", "info"], env={**os.environ, **self.env}, capture_output=True)
            if done.returncode == 0:
                return None
            time.sleep(0.3)
        return "dockerd did not answer in time"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        env = {**os.environ, **self.env}
        ids = subprocess.run(["docker", "ps", "-aq"], env=env, capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], env=env, capture_output=True, timeout=60)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.work / "docker-data", ignore_errors=True)
        shutil.rmtree(self.work / "docker-exec", ignore_errors=True)


# ------------------------------------------------------------------------------ for the tests
def only_run(store_root: Path):
    """The one run of the Default experiment, read fresh."""
    from mlkit.tracking.store import FileStore

    runs, _ = FileStore(store_root).search_runs(["0"])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return runs[0]


def wait_for(predicate: Callable[[], bool], timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def containers(engine: str, run_id: str) -> list[str]:
    """Containers (running or not) of this run, as the engine lists them."""
    out = subprocess.run(
        [engine, "ps", "-a", "--filter", f"name=mlkit-{run_id}", "--format", "{{.Names}}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return out.stdout.split()


REPO = Path(__file__).resolve().parents[2]
SITE = sysconfig.get_paths()["purelib"]  # this interpreter's packages, mounted read-only for MLflow
# docker_env lines that make mlkit (this checkout) and MLflow importable in the base image
MLKIT_IN_IMAGE = f"""
volumes: ["{REPO}:/opt/mlkit:ro", "{SITE}:/opt/site:ro"]
environment: [["PYTHONPATH", "/opt/mlkit:/opt/site"], ["MLFLOW_ALLOW_FILE_STORE", "true"]]
"""


FAKE_UUIDS = [f"GPU-f4ce000{i}-0000-4000-8000-00000000000{i}" for i in range(4)]  # MLKIT_FAKE_NVML=four_idle


@contextmanager
def fake_cdi_spec() -> Iterator[None]:
    """A CDI spec naming the stand-in NVML's four GPUs by UUID, each a harmless device node
    (/dev/null, ...) at /dev/nvidia<i>: podman passes the leased ones in. Root only."""
    spec = Path("/var/run/cdi") / f"mlkit-test-{os.getpid()}.yaml"
    spec.parent.mkdir(parents=True, exist_ok=True)
    nodes = ["/dev/null", "/dev/zero", "/dev/full", "/dev/urandom"]
    devices = "".join(
        f'  - name: "{u}"\n    containerEdits:\n      deviceNodes:\n        - path: "/dev/nvidia{i}"\n'
        f'          hostPath: "{nodes[i]}"\n'
        for i, u in enumerate(FAKE_UUIDS)
    )
    spec.write_text(f'cdiVersion: "0.5.0"\nkind: "nvidia.com/gpu"\ndevices:\n{devices}')
    try:
        yield
    finally:
        spec.unlink(missing_ok=True)
