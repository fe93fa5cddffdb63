"""Issue 14, items 4, 8 and 10, through the real CLI: one JSON line per document with the same
keys every time, the closing summary on a terminal, and the smaller mends."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import REPO, run_mlkit, run_on_a_terminal, trainer_env

FAST = ("--env-manager", "local", "--gpus", "none", "--system-metrics-interval", "0")
KEYS = {"run_id", "experiment_id", "status", "exit_code", "skipped", "duration_s", "failure_reason",
        "artifact_uri", "metrics", "model_uri", "next", "error", "problems", "hint"}  # fmt: skip

TRAIN = """
import mlkit
with mlkit.start_run():
    for step in range(3):
        mlkit.log_metric("val_accuracy", 0.9 + step / 100, step=step)
        mlkit.log_metric("loss", 1 / (step + 1), step=step)
        mlkit.log_metric("epoch", step, step=step)
    mlkit.log_text("flavors: {}", "model/MLmodel")
    mlkit.set_tag("mlflow.log-model.history", '[{"artifact_path": "model"}]')
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "digits"
    root.mkdir()
    (root / "MLproject").write_text("name: digits\nentry_points:\n  main:\n    command: python train.py\n")
    (root / "train.py").write_text(textwrap.dedent(TRAIN))
    return root


def _doc(stdout: str) -> dict:
    lines = stdout.splitlines()
    assert len(lines) == 1, stdout  # one document, one line: `>> nightly.jsonl` reads back by line
    return json.loads(lines[0])


# --------------------------------------------------------------------------- item 4: cron logs
def test_json_is_one_line_with_the_same_keys_in_every_document(project, tmp_path):
    env = trainer_env()
    ran = run_mlkit("run", str(project), *FAST, "--skip-if-done", "--json", env=env)
    assert ran.returncode == 0, ran.stderr
    skipped = run_mlkit("run", str(project), *FAST, "--skip-if-done", "--json", env=env)
    failed = run_mlkit("run", str(tmp_path / "missing"), *FAST, "--json", env=env)
    docs = [_doc(r.stdout) for r in (ran, skipped, failed)]
    for doc in docs:
        assert set(doc) == KEYS, set(doc) ^ KEYS
    assert docs[0]["status"] == "FINISHED" and docs[0]["exit_code"] == 0 and docs[0]["skipped"] is False
    assert docs[1] == {
        **docs[1],
        "status": "FINISHED",
        "exit_code": 0,
        "skipped": True,
        "run_id": docs[0]["run_id"],
    }
    assert docs[2]["status"] is None and docs[2]["exit_code"] == failed.returncode == 66


def test_json_is_indented_on_a_terminal(project):
    argv = [sys.executable, "-m", "mlkit", "run", str(project), *FAST, "--json"]
    code, screen = run_on_a_terminal(argv, env=trainer_env())
    assert code == 0
    assert b'{\r\n  "run_id": "' in screen


# ------------------------------------------------------------------ item 8: the closing summary
def test_closing_summary_on_a_terminal(project):
    argv = [sys.executable, "-m", "mlkit", "run", str(project), *FAST]
    code, screen = run_on_a_terminal(argv, env=trainer_env())
    text = screen.decode().replace("\r\n", "\n")
    assert code == 0, text
    run_id = re.search(r"run ([0-9a-f]{32}) FINISHED in", text).group(1)
    summary = text.split(" FINISHED in ", 1)[1]
    assert re.search(r"^  val_accuracy\s+0\.92$", summary, re.M), summary
    assert re.search(r"^  loss\s+0\.333333$", summary, re.M)
    assert "epoch" not in summary  # bookkeeping, not a key metric
    assert re.search(rf"^  model\s+runs:/{run_id}/model$", summary, re.M)
    assert f"mlkit runs show {run_id}" in summary
    assert f"mlkit models register runs:/{run_id}/model digits" in summary


def test_closing_summary_in_json_and_not_in_a_pipe(project):
    result = run_mlkit("run", str(project), *FAST, "--json", env=trainer_env())
    doc = _doc(result.stdout)
    assert doc["metrics"] == {"val_accuracy": 0.92, "loss": pytest.approx(1 / 3)}
    assert doc["model_uri"] == f"runs:/{doc['run_id']}/model"
    assert doc["next"] == [
        f"mlkit runs show {doc['run_id']}",
        f"mlkit models register {doc['model_uri']} digits",
    ]
    plain = run_mlkit("run", str(project), *FAST, env=trainer_env())
    assert plain.returncode == 0 and "mlkit runs show" not in plain.stderr  # cron logs stay short


# --------------------------------------------------------------------------- item 10: mends
def test_missing_project_exits_66_as_documented(tmp_path):
    result = run_mlkit("run", str(tmp_path / "nope"), *FAST)
    assert result.returncode == 66, result.stderr
    assert "no such directory" in result.stderr
    assert "| 66 | `NOT_FOUND` |" in (REPO / "docs" / "exit-codes.md").read_text()


def test_a_script_path_suggests_dash_e(project):
    result = run_mlkit("run", str(project / "train.py"), *FAST)
    assert result.returncode == 2
    assert "-e train.py" in result.stderr and str(project) in result.stderr


def test_yaml_error_names_the_line_to_fix(tmp_path):
    root = tmp_path / "p"
    root.mkdir()
    (root / "MLproject").write_text("name: p\nentry_points\n  main:\n    command: python -c pass\n")
    result = run_mlkit("run", str(root), "--dry-run")
    assert result.returncode == 2
    assert "MLproject: line 2, column 1: invalid YAML: could not find expected ':'" in result.stderr


def _offline() -> bool:
    try:
        socket.getaddrinfo("conda.anaconda.org", 443)
    except OSError:
        return True
    return False


@pytest.mark.skipif(not _offline(), reason="needs a machine without network")
def test_conda_error_without_network_is_not_cut(tmp_path):
    root = tmp_path / "c"
    root.mkdir()
    (root / "conda.yaml").write_text("name: c\nchannels: [conda-forge]\ndependencies: [python=3.11]\n")
    result = run_mlkit("env", "lock", str(root), timeout=120)
    assert result.returncode == 73
    line = next(ln for ln in result.stderr.splitlines() if ln.startswith("Error:"))
    assert "no network" in line and "Caused)" not in line and "Caused by" not in line
    assert line.endswith((")", "…)")), line


def test_brief_cuts_at_a_word():
    from mlkit.env.conda import brief

    text = (
        "error sending request for url (https://x/y)\nCaused by: client error (Connect)\nCaused by: dns error"
    )
    assert brief(text) == "error sending request for url (https://x/y): client error (Connect): dns error"
    cut = brief(text, 60)
    assert cut.endswith("…") and len(cut) <= 60 and "Caus" not in cut
    assert text.replace("\n", " ").startswith(cut[:-1].replace(": client", " Caused by: client"))


def test_rnn_sample_escapes_control_bytes():
    pytest.importorskip("torch")
    import importlib.util

    saved = sys.modules.pop("model", None)  # another test's `model` (a logged model's code copy)
    sys.path.insert(0, str(REPO / "projects" / "rnn"))
    try:
        spec = importlib.util.spec_from_file_location("rnn_train_fh", REPO / "projects" / "rnn" / "train.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO / "projects" / "rnn"))
        sys.modules.pop("model", None)
        if saved is not None:
            sys.modules["model"] = saved
    assert module.printable("def \x1bH x\r\n\tok\x7f é\u200b") == "def \\x1bH x\\r\n\tok\\x7f é\\u200b"
    source = (REPO / "projects" / "rnn" / "train.py").read_text()
    assert 'logger.print("sample:\\n" + printable(sample))' in source


def test_a_folder_named_mlkit_beside_a_script_does_not_shadow_mlkit(tmp_path):
    (tmp_path / "mlkit").mkdir()  # a clone of this repository, say
    (tmp_path / "mlkit" / "README.md").write_text("a clone\n")
    (tmp_path / "predict.py").write_text("import mlkit\nprint(mlkit.__file__, callable(mlkit.load_model))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "predict.py"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(REPO / "mlkit" / "__init__.py"), "True"]


def test_pillow_is_installed_by_the_readme_test_command():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    command = re.search(r"pip install (torch==\S+ -e '\.\[([a-z,]+)\]') && python -m pytest", readme)
    assert command and command.group(1) in ci
    assert any(
        dep.lower().startswith("pillow") for extra in command.group(2).split(",") for dep in extras[extra]
    )
