"""`models delete` asks first (refuses without a terminal unless --yes) and says what goes;
registering the same run's model twice warns, and `--if-new` reuses the existing version."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

from mlkit.errors import ExitCode

from helpers import run_mlkit, run_on_a_terminal


def _champion_model(model_run, registry) -> str:
    """Model 'cnn': v1 in Production with alias champion, v2 in None; returns v1's run id."""
    first, second = model_run(metrics={"val_acc": 0.9}), model_run(metrics={"val_acc": 0.8})
    for run_id in (first, second):
        assert run_mlkit("models", "register", f"runs:/{run_id}/model", "cnn").returncode == 0
    registry.transition_model_version_stage("cnn", 1, "Production")
    registry.set_alias("cnn", "champion", 1)
    return first


def _answer_on_a_terminal(argv: list[str], answer: bytes, timeout: float = 60) -> tuple[int, str]:
    """Run `argv` with stdin, stdout and stderr on a fresh pseudo-terminal, typing `answer`."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(argv, stdin=follower, stdout=follower, stderr=follower, env=os.environ.copy())
    os.close(follower)
    os.write(leader, answer)  # the terminal holds the line until the prompt reads it
    screen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child is gone and its output drained
            break
        if not chunk:
            break
        screen += chunk
    os.close(leader)
    return proc.wait(timeout=timeout), screen.decode(errors="replace")


def test_delete_without_a_terminal_refuses_and_says_what_would_go(model_run, registry):
    _champion_model(model_run, registry)
    refused = run_mlkit("models", "delete", "cnn")
    assert refused.returncode == ExitCode.USAGE, refused.stderr
    first = refused.stderr.splitlines()[0]
    assert first.startswith("Error: not deleting model 'cnn' with 2 version(s) (1, 2)")
    assert "stages v1 Production" in first and "aliases champion -> v1" in first
    assert "no terminal" in first and "--yes" in refused.stderr
    assert [v.version for v in registry.list_model_versions("cnn")] == [1, 2]

    one = run_mlkit("models", "delete", "cnn", "1")
    assert one.returncode == ExitCode.USAGE
    assert "version 1 of model 'cnn'; stages v1 Production; aliases champion -> v1" in one.stderr
    assert registry.get_version_by_alias("cnn", "champion").version == 1

    # stderr on a terminal but nothing to read an answer from: still refused, not a hang
    code, screen = run_on_a_terminal([sys.executable, "-m", "mlkit", "models", "delete", "cnn"])
    assert code == ExitCode.USAGE and b"no terminal to ask on" in screen
    assert [v.version for v in registry.list_model_versions("cnn")] == [1, 2]

    done = run_mlkit("models", "delete", "cnn", "1", "--yes")
    assert done.returncode == 0 and "Deleted version 1 of model 'cnn'" in done.stderr
    assert [v.version for v in registry.list_model_versions("cnn")] == [2]
    assert registry.get_registered_model("cnn").aliases == {}
    done = run_mlkit("models", "delete", "cnn", "-y")
    assert done.returncode == 0 and "Deleted model 'cnn' with 1 version(s) (2)" in done.stderr
    assert run_mlkit("models", "show", "cnn").returncode == ExitCode.NOT_FOUND


def test_delete_on_a_terminal_asks_and_no_keeps_everything(model_run, registry):
    _champion_model(model_run, registry)
    argv = [sys.executable, "-m", "mlkit", "models", "delete", "cnn"]
    code, screen = _answer_on_a_terminal(argv, b"n\n")
    assert code == ExitCode.FAILURE, screen
    assert "This deletes model 'cnn' with 2 version(s) (1, 2); stages v1 Production" in screen
    assert "aliases champion -> v1" in screen and "Delete? [y/N]" in screen
    assert "Nothing deleted." in screen
    assert registry.get_version_by_alias("cnn", "champion").version == 1

    code, screen = _answer_on_a_terminal(argv, b"\n")  # Enter alone is the default: no
    assert code == ExitCode.FAILURE and "Nothing deleted." in screen
    assert [v.version for v in registry.list_model_versions("cnn")] == [1, 2]

    code, screen = _answer_on_a_terminal(argv, b"y\n")
    assert code == 0, screen
    assert "Deleted model 'cnn'" in screen
    assert run_mlkit("models", "list", "--json").stdout.strip() == "[]"


def test_registering_the_same_model_twice_warns_and_if_new_reuses(model_run, registry):
    run_id = model_run(metrics={"val_acc": 0.9})
    uri = f"runs:/{run_id}/model"
    first = run_mlkit("models", "register", uri, "cnn")
    assert first.returncode == 0 and first.stdout.strip() == "1" and "Warning" not in first.stderr

    again = run_mlkit("models", "register", uri, "cnn", "--if-new")
    assert again.returncode == 0 and again.stdout.strip() == "1", again.stderr
    assert f"{uri} is already version 1 of cnn; nothing registered (--if-new)" in again.stderr
    as_json = run_mlkit("models", "register", uri, "cnn", "--if-new", "--json")
    assert json.loads(as_json.stdout)["version"] == 1
    assert [v.version for v in registry.list_model_versions("cnn")] == [1]

    twice = run_mlkit("models", "register", uri, "cnn")
    assert twice.returncode == 0 and twice.stdout.strip() == "2"
    assert f"Warning: {uri} is already version 1 of cnn; registered it again as version 2" in twice.stderr
    assert "--if-new" in twice.stderr
    assert [v.version for v in registry.list_model_versions("cnn")] == [1, 2]

    other = model_run(metrics={"val_acc": 0.95})  # another run's model is new: no warning
    third = run_mlkit("models", "register", f"runs:/{other}/model", "cnn", "--if-new")
    assert third.stdout.strip() == "3" and "Warning" not in third.stderr and "already" not in third.stderr

    # a deleted version does not count: --if-new registers afresh
    assert run_mlkit("models", "delete", "cnn", "3", "--yes").returncode == 0
    fourth = run_mlkit("models", "register", f"runs:/{other}/model", "cnn", "--if-new")
    assert fourth.stdout.strip() == "4" and "already" not in fourth.stderr
    history = json.loads(run_mlkit("models", "history", "cnn", "--json").stdout)
    assert [h["what"] for h in history].count("create_version") == 4


def test_tags_that_collide_are_refused_before_a_version_or_model_exists(registry):
    """Tags 'a' and 'a/b' cannot both be files: the second write used to fail after the version's
    directory and first tag were written, leaving a half-made version."""
    import pytest

    from mlkit.errors import InvalidInputError

    registry.create_registered_model("cnn")
    with pytest.raises(InvalidInputError, match="collides"):
        registry.create_model_version("cnn", "runs:/" + "a" * 32 + "/model", tags={"a": "1", "a/b": "2"})
    assert registry.search_model_versions(name="cnn") == []
    model_dir = registry.root / "models" / "cnn"
    assert not [p for p in model_dir.iterdir() if p.name.startswith("version-")]
    with pytest.raises(InvalidInputError, match="collides"):
        registry.create_registered_model("other", tags={"x/y": "1", "x": "2"})
    assert not (registry.root / "models" / "other").exists()
    version = registry.create_model_version("cnn", "runs:/" + "a" * 32 + "/model", tags={"a/b": "2"})
    assert version.version == 1
