"""The env memo (mlkit/env/memo.py): a project whose environment file has not changed is run
without importing py-rattler or packaging again, and the memo never answers for a file, a -r file,
an interpreter or an installed set it was not made for, nor when someone else could have written it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mlkit import settings
from mlkit.env import EnvRef, memo
from mlkit.env.check import check_current
from mlkit.env.spec import load_spec
from mlkit.tracking.store import FileStore

from helpers import REPO

PY = ".".join(map(str, sys.version_info[:2]))

# A conda.yaml this test interpreter satisfies (packaging is installed wherever mlkit is).
SATISFIED = f"dependencies:\n  - python={PY}\n  - pip\n  - pip:\n    - packaging>=20\n"

# The modules are listed by an exit handler: with py-rattler loaded, the CLI leaves through
# os._exit after running the exit handlers (mlkit.cli.output._exit_without_teardown).
RUN_AND_LIST_MODULES = """
import atexit, json, sys
sys.argv = ['mlkit', 'run', *sys.argv[1:]]
atexit.register(lambda: print(json.dumps([m for m in ('rattler', 'packaging', 'hashlib') if m in sys.modules])))
from mlkit.cli import main
main()
"""


def _run(project: Path, store: Path, cache: Path) -> tuple[list[str], str]:
    env = {**os.environ, "MLKIT_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)}
    argv = [str(project), "--gpus", "none", "--system-metrics-interval", "0", "--store", str(store)]
    done = subprocess.run(
        [sys.executable, "-c", RUN_AND_LIST_MODULES, *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_a_second_run_of_an_unchanged_project_loads_neither_rattler_nor_packaging(tmp_path):
    project = tmp_path / "p"
    project.mkdir()
    (project / "MLproject").write_text(
        "name: p\nconda_env: conda.yaml\nentry_points:\n  main:\n    command: 'python -c pass'\n"
    )
    (project / "conda.yaml").write_text(SATISFIED)
    store, cache = tmp_path / "mlruns", tmp_path / "cache"

    first, first_err = _run(project, store, cache)
    second, second_err = _run(project, store, cache)

    assert "rattler" in first and "packaging" in first  # the file was validated once
    assert second == []  # then answered from the memo
    assert "using the current environment: it satisfies conda.yaml" in first_err
    assert "using the current environment: it satisfies conda.yaml" in second_err
    runs = FileStore(store).search_runs(["0"], "")[0]
    assert len(runs) == 2 and runs[0].data.tags["mlkit.env_hash"] == runs[1].data.tags["mlkit.env_hash"]


def test_the_memo_follows_the_file_and_its_requirement_files(tmp_path, monkeypatch):
    conda = tmp_path / "conda.yaml"
    conda.write_text("dependencies:\n  - python=3.11\n  - pip:\n    - -r requirements.txt\n")
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("six==1.15\n")
    ref = EnvRef("conda", "conda.yaml")

    first = load_spec(tmp_path, ref)
    assert [p.text for p in first.pip] == ["six==1.15"]
    assert load_spec(tmp_path, ref) == first  # answered by the memo: the same spec

    reqs.write_text("six==1.16\n")  # only the -r file changed
    second = load_spec(tmp_path, ref)
    assert [p.text for p in second.pip] == ["six==1.16"] and second.hash != first.hash

    conda.write_text("dependencies:\n  - python=3.12\n  - pip:\n    - -r requirements.txt\n")
    third = load_spec(tmp_path, ref)
    assert third.python == "3.12.*" and third.hash != second.hash

    # each answer is what a run with no memo at all computes
    monkeypatch.setenv("MLKIT_CACHE_DIR", str(tmp_path / "empty-cache"))
    assert load_spec(tmp_path, ref) == third


def _tamper(memo_file: Path, new_hash: str) -> None:
    doc = json.loads(memo_file.read_text())
    for entry in doc["spec"].values():
        entry["spec"]["hash"] = new_hash
    memo_file.write_text(json.dumps(doc))


def test_a_memo_someone_else_could_have_written_is_ignored(tmp_path):
    (tmp_path / "conda.yaml").write_text(SATISFIED)
    ref = EnvRef("conda", "conda.yaml")
    true_hash = load_spec(tmp_path, ref).hash
    memo_file = settings.cache_dir() / memo.MEMO_FILE
    assert memo_file.stat().st_mode & 0o777 == 0o600

    _tamper(memo_file, "f" * 16)
    assert load_spec(tmp_path, ref).hash == "f" * 16  # our own private memo is what answers

    memo_file.chmod(0o666)  # writable by every user: not trusted
    assert load_spec(tmp_path, ref).hash == true_hash

    _tamper(memo_file, "f" * 16)
    memo_file.chmod(0o600)
    os.chown(memo_file, 65534, 65534)  # another user's file (the tests run as root)
    assert load_spec(tmp_path, ref).hash == true_hash

    memo_file.unlink()
    elsewhere = tmp_path / "planted.json"
    elsewhere.write_text(json.dumps({"v": 1, "spec": {}}))
    memo_file.symlink_to(elsewhere)  # a link: not followed
    assert load_spec(tmp_path, ref).hash == true_hash

    memo_file.unlink()
    memo_file.write_bytes(b"\x00not json{")  # torn or garbage: ignored, then written anew
    assert load_spec(tmp_path, ref).hash == true_hash
    assert json.loads(memo_file.read_text())["v"] == 1


def test_the_check_is_asked_again_when_the_installed_distributions_change(tmp_path, monkeypatch):
    (tmp_path / "conda.yaml").write_text(
        f"dependencies:\n  - python={PY}\n  - pip:\n    - mlkit-memo-probe>=1.0\n"
    )
    spec = load_spec(tmp_path, EnvRef("conda", "conda.yaml"))
    first = check_current(spec)
    assert not first.satisfied and "mlkit-memo-probe" in first.reason

    site = tmp_path / "site"
    (site / "mlkit_memo_probe-1.2.dist-info").mkdir(parents=True)
    monkeypatch.syspath_prepend(str(site))
    assert check_current(spec).satisfied  # installed now: the remembered "no" is not used

    (site / "mlkit_memo_probe-1.2.dist-info").rename(site / "mlkit_memo_probe-0.9.dist-info")
    again = check_current(spec)
    assert not again.satisfied and "installed: 0.9" in again.reason


def test_a_requirement_file_replaced_by_a_fifo_is_refused_not_waited_on(tmp_path):
    """The memo hashes the -r files it was built from again on every use: one that became a FIFO
    must not block that read (nothing would ever write it), and the file is then read as without a
    memo, which refuses it."""
    (tmp_path / "conda.yaml").write_text("dependencies:\n  - pip:\n    - -r requirements.txt\n")
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("six\n")
    code = (
        "import sys\nfrom pathlib import Path\nfrom mlkit.env import EnvRef\nfrom mlkit.env.spec import load_spec\n"
        "from mlkit.errors import EnvSpecError\n"
        "try:\n    print(load_spec(Path(sys.argv[1]), EnvRef('conda', 'conda.yaml')).hash)\n"
        "except EnvSpecError as exc:\n    print('refused:', exc)\n"
    )
    env = {**os.environ, "MLKIT_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    first = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True,
                           timeout=60)  # fmt: skip
    assert first.returncode == 0 and len(first.stdout.strip()) == 16, first.stderr
    reqs.unlink()
    os.mkfifo(reqs)
    second = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith("refused:") and "requirements.txt" in second.stdout
