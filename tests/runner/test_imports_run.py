"""The import budget of the run path: a plain local run loads only what it uses (issue 2)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "pynvml", "conda_lock", "rattler", "numpy", "sklearn", "mlflow", "rich")


def test_plain_local_run_imports_only_what_it_uses(tmp_path):
    """`mlkit run --env-manager local --gpus none` (issue 2's overhead target) skips the GPU probe,
    the env cache, the search index, the fingerprint, PyYAML and a few costly stdlib modules."""
    project = tmp_path / "p"
    project.mkdir()
    (project / "MLproject").write_text(
        "name: p\n\nentry_points:\n  main:\n    parameters:\n"
        "      lr: {type: float, default: 0.01}  # the learning rate\n      epochs: {type: int, default: 1}\n"
        '    command: "python -c pass {lr} {epochs}"\n'
    )
    argv = ["run", str(project), "--env-manager", "local", "--gpus", "none", "--system-metrics-interval", "0"]
    argv += ["--store", str(tmp_path / "mlruns")]
    # What the interpreter loaded before mlkit (site's .pth files may import certifi, and with it
    # tempfile and shutil) is not mlkit's to answer for: only what the run added is counted.
    code = (
        f"import sys; before = set(sys.modules); sys.argv = ['mlkit', *{argv!r}]\nfrom mlkit.cli import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", "import json\n" + code], capture_output=True, text=True, check=True
    )
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    unwanted = {
        "mlkit.gpu.devices",
        "mlkit.gpu.nvml",
        "mlkit.env.cache",
        "mlkit.env.spec",
        "mlkit.tracking.index",
        "mlkit.tracking.search_grammar",
        "mlkit.tracking.search",
        "mlkit.runner.fingerprint",
        "sqlite3",
        "psutil",
        "logging",
        "socket",
        "configparser",
        "csv",
        "yaml",  # issue 20: the MLproject and the meta.yaml files are read and written without it
        # issue 20: ~5 ms of every run; each loads only where it is used (cleanup, a typo's hint)
        "shutil",
        "bz2",
        "lzma",
        "random",
        "tempfile",
        "difflib",
        *HEAVY,
    }
    assert not loaded & unwanted, sorted(loaded & unwanted)
