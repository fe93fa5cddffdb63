"""A real single-node Slurm cluster in a scratch directory, without systemd (after
/work/shared/recipes/single-node-slurm.sh): munge, slurmctld, slurmd with four fake GPUs
(mknod'ed character devices, so GRES sets CUDA_VISIBLE_DEVICES), and optionally slurmdbd on a
private MariaDB for `sacct`. Everything lives under `root`: the config is found through SLURM_CONF,
the daemons listen on free loopback ports, so two clusters (or a test and a developer's) do not
collide. Used by tests/slurm/conftest.py and benchmarks/bench_slurm.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("slurmctld", "slurmd", "munged")


def missing() -> str | None:
    """Why this machine cannot run the cluster (None: it can)."""
    for exe in ("sbatch", "slurmctld", "slurmd", "munged"):
        if shutil.which(exe) is None and not Path(f"/usr/sbin/{exe}").exists():
            return f"{exe} is not installed (apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "the test cluster runs slurmd as root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, root: Path):
        self.root = root
        self.conf = root / "slurm.conf"
        self.pids: dict[str, int] = {}
        self.procs: dict[str, subprocess.Popen] = {}
        self.accounting = False
        self.jobcomp = True  # the job-completion log (jobcomp/filetxt); without it only the controller knows
        self.dbd_port = _free_port()
        self.db_port = _free_port()
        self.ctld_port = _free_port()
        self.slurmd_port = _free_port()
        self.env = {"SLURM_CONF": str(self.conf)}

    # ------------------------------------------------------------------ config
    def write_conf(self, accounting: bool, jobcomp: bool = True) -> None:
        d = self.root
        host = socket.gethostname()
        acct = "AccountingStorageType=accounting_storage/none"
        comp = (
            f"JobCompType=jobcomp/filetxt\nJobCompLoc={d}/log/jobcomp.txt"
            if jobcomp
            else "JobCompType=jobcomp/none"
        )
        if accounting:
            acct = (
                "AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=localhost\n"
                f"AccountingStoragePort={self.dbd_port}\nAccountingStorageTRES=gres/gpu"
            )
        self.conf.write_text(
            f"""ClusterName=mlkittest
SlurmctldHost=localhost
SlurmctldPort={self.ctld_port}
SlurmdPort={self.slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=100
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MpiDefault=none
ReturnToService=2
GresTypes=gpu
{acct}
{comp}
JobAcctGatherType=jobacct_gather/none
MinJobAge=300
KillWait=5
OverTimeLimit=0
MailProg=/bin/true
NodeName=localhost NodeHostname={host} CPUs={os.cpu_count()} RealMemory=4000 Gres=gpu:4 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
        )
        (d / "gres.conf").write_text(
            f"AutoDetect=off\nNodeName=localhost Name=gpu File={d}/fakegpu/nvidia[0-3]\n"
        )
        if accounting:
            dbd = d / "slurmdbd.conf"
            dbd.write_text(
                f"""AuthType=auth/munge
DbdHost=localhost
DbdPort={self.dbd_port}
SlurmUser=root
LogFile={d}/log/slurmdbd.log
PidFile={d}/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={self.db_port}
StorageLoc=slurm_acct_db
StorageUser=root
"""
            )
            dbd.chmod(0o600)
        self.accounting = accounting
        self.jobcomp = jobcomp

    # ------------------------------------------------------------------ daemons
    def _spawn(self, name: str, argv: list[str], log: str) -> None:
        out = open(self.root / "log" / log, "ab")
        env = {**os.environ, **self.env}
        self.procs[name] = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        out.close()

    def start(self, accounting: bool) -> None:
        d = self.root
        for sub in ("state", "spool", "log", "fakegpu", "db"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        for i in range(4):
            dev = d / "fakegpu" / f"nvidia{i}"
            if not dev.exists():
                os.mknod(dev, 0o666 | 0o020000, os.makedev(195, i))
        self._start_munge()
        self.write_conf(accounting)
        if accounting:
            self._start_db()
        self.start_controller()

    def _start_munge(self) -> None:
        """munged on its standard socket (sbatch and slurmdbd's connection only look there); one
        already running (another cluster's, the system's) is shared and left running."""
        if subprocess.run(["munge", "-n"], capture_output=True).returncode == 0:
            return
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        self._spawn("munged", ["/usr/sbin/munged", "-F", "--force"], "munged.out")
        self._until(
            lambda: subprocess.run(["munge", "-n"], capture_output=True).returncode == 0, 10, "munged"
        )

    def _start_db(self) -> None:
        d = self.root
        datadir = d / "db"
        if not (datadir / "mysql").exists():
            subprocess.run(
                ["mariadb-install-db", "--user=root", f"--datadir={datadir}", "--auth-root-authentication-method=normal",
                 "--skip-test-db"],
                check=True, capture_output=True,
            )  # fmt: skip
        self._spawn(
            "mariadbd",
            ["/usr/sbin/mariadbd", "--no-defaults", "--user=root", f"--datadir={datadir}", "--bind-address=127.0.0.1",
             f"--port={self.db_port}", f"--socket={d}/db.sock", f"--pid-file={d}/mariadb.pid", "--skip-grant-tables",
             "--innodb-buffer-pool-size=16M", "--skip-log-bin"],
            "mariadb.log",
        )  # fmt: skip
        self._until(lambda: (d / "db.sock").exists(), 60, "mariadbd")
        self._spawn("slurmdbd", ["/usr/sbin/slurmdbd", "-D"], "slurmdbd.out")

        def dbd_up() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.dbd_port)) == 0

        self._until(dbd_up, 60, "slurmdbd")

    def start_controller(self) -> None:
        self._spawn("slurmctld", ["/usr/sbin/slurmctld", "-D", "-i", "-f", str(self.conf)], "slurmctld.out")
        self._spawn("slurmd", ["/usr/sbin/slurmd", "-D", "-f", str(self.conf)], "slurmd.out")
        self._until(self._idle, 60, "the node to become idle")

    def _idle(self) -> bool:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env={**os.environ, **self.env}
        )
        return out.stdout.strip().startswith(("idle", "mixed", "allocated"))

    def switch(self, accounting: bool, jobcomp: bool = True) -> None:
        """Restart the controller and node daemon with or without slurmdbd accounting (and with or
        without the job-completion log)."""
        if (accounting, jobcomp) == (self.accounting, self.jobcomp):
            return
        self.wait_empty()
        for name in ("slurmd", "slurmctld"):
            self._stop(name)
        self.write_conf(accounting, jobcomp)
        if accounting and "slurmdbd" not in self.procs:
            self._start_db()
        self.start_controller()

    def wait_empty(self, timeout: float = 60) -> None:
        def empty() -> bool:
            out = subprocess.run(
                ["squeue", "-h"], capture_output=True, text=True, env={**os.environ, **self.env}
            )
            return out.returncode == 0 and not out.stdout.strip()

        self._until(empty, timeout, "the queue to empty")

    def _stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def stop(self) -> None:
        """Cancel what is left, stop every daemon this cluster started, and any job step process
        (slurmstepd) of this cluster that outlived its slurmd."""
        env = {**os.environ, **self.env}
        subprocess.run(["scancel", "--full", "-u", "root"], capture_output=True, env=env)
        try:
            self.wait_empty(15)
        except RuntimeError:
            pass
        for name in ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged"):
            self._stop(name)
        for pid in self._stray_steps():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _stray_steps(self) -> list[int]:
        mark = f"SLURM_CONF={self.conf}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if (entry / "comm").read_text().strip() != "slurmstepd":
                    continue
                if mark in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    def _until(self, check, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    log = (self.root / "log").glob("*")
                    raise RuntimeError(
                        f"{name} exited ({proc.returncode}) waiting for {what}; logs in {list(log)}"
                    )
            time.sleep(0.1)
        raise RuntimeError(f"timed out waiting for {what} (logs in {self.root / 'log'})")
