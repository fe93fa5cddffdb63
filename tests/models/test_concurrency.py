"""Version numbers stay unique when separate processes register at the same moment."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

WORKER = """
import os, sys, time
from pathlib import Path
from mlkit.tracking.registry import RegistryStore
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.002)
v = RegistryStore(sys.argv[1]).create_model_version("cnn", "runs:/r%s/model" % sys.argv[3], run_id="r" + sys.argv[3])
print(v.version)
"""


def test_eight_processes_get_versions_one_to_eight(store_root: Path, tmp_path: Path, registry):
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(store_root), str(go), str(i)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    time.sleep(0.8)  # let every process import and start polling
    go.touch()
    printed = sorted(int(p.communicate(timeout=60)[0]) for p in procs)
    assert all(p.returncode == 0 for p in procs)
    assert printed == list(range(1, 9))
    versions = registry.list_model_versions("cnn")
    assert sorted(v.version for v in versions) == list(range(1, 9))
    assert len({v.run_id for v in versions}) == 8  # each process's own version, none overwritten
    assert [e.what for e in registry.history("cnn")].count("create_version") == 8
    assert [e.what for e in registry.history("cnn")].count("create_model") == 1
