"""`mlkit models ...` through the real command: output, errors and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from mlkit.errors import ExitCode

from helpers import run_mlkit


def test_register_list_show_transition_alias_history(model_run, registry):
    run_id = model_run(metrics={"val_acc": 0.8, "loss": 0.4}, params={"lr": "0.1"})
    result = run_mlkit("models", "register", f"runs:/{run_id}/model", "cnn")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"
    assert run_mlkit("models", "transition", "cnn", "1", "production").returncode == 0
    assert run_mlkit("models", "alias", "cnn", "champion", "1").returncode == 0

    listed = json.loads(run_mlkit("models", "list", "--json").stdout)
    assert [m["name"] for m in listed] == ["cnn"] and listed[0]["aliases"] == {"champion": 1}
    shown = run_mlkit("models", "show", "cnn", "--json")
    overview = json.loads(shown.stdout)
    version = overview["versions"][0]
    assert version["version"]["current_stage"] == "Production" and version["version"]["aliases"] == [
        "champion"
    ]
    assert version["metrics"] == {"val_acc": 0.8, "loss": 0.4} and version["params"] == {"lr": "0.1"}
    human = run_mlkit("models", "show", "cnn")
    assert "Production" in human.stdout and "val_acc=0.8" in human.stdout

    assert run_mlkit("models", "tag", "cnn", "team", "vision", "--version", "1").returncode == 0
    assert run_mlkit("models", "describe", "cnn", "CIFAR classifier").returncode == 0
    assert registry.get_model_version("cnn", 1).tags == {"team": "vision"}
    assert registry.get_registered_model("cnn").description == "CIFAR classifier"

    history = json.loads(run_mlkit("models", "history", "cnn", "--json").stdout)
    whats = ["create_model", "create_version", "set_stage", "set_alias", "set_version_tag", "set_description"]
    assert [h["what"] for h in history] == whats
    assert run_mlkit("models", "history", "cnn").stdout.count("\n") == 7  # header + 6 lines

    assert run_mlkit("models", "delete", "cnn", "1", "--yes").returncode == 0
    assert registry.list_model_versions("cnn") == []
    assert run_mlkit("models", "delete", "cnn", "--yes").returncode == 0
    gone = run_mlkit("models", "delete", "cnn", "--yes")
    assert gone.returncode == ExitCode.NOT_FOUND and "does not exist" in gone.stderr


def test_bad_input_one_line_error_exit_code_and_nothing_written(model_run, store_root: Path):
    bare = model_run(with_model=False)
    cases = [
        (("models", "show", "nope"), ExitCode.NOT_FOUND, "'nope' does not exist"),
        (("models", "register", f"runs:/{bare}/model", "cnn"), ExitCode.NOT_FOUND, "no model there"),
        (("models", "register", f"runs:/{bare}/model", "../evil"), ExitCode.USAGE, "invalid model name"),
        (("models", "register", "models:/cnn/prod", "x"), ExitCode.USAGE, "invalid model URI"),
    ]
    for args, code, message in cases:
        result = run_mlkit(*args)
        assert result.returncode == code, (args, result.stderr)
        assert message in result.stderr and result.stderr.startswith("Error: ")
        assert len([x for x in result.stderr.splitlines() if x.startswith("Error")]) == 1
        assert "Traceback" not in result.stderr
    assert not (store_root / "models").exists() or not any(
        p.is_dir() for p in (store_root / "models").iterdir()
    )
    assert not (store_root.parent / "evil").exists()

    good = model_run()
    assert run_mlkit("models", "register", f"runs:/{good}/model", "cnn").returncode == 0
    for args, code, message in [
        (("models", "transition", "cnn", "7", "Staging"), ExitCode.NOT_FOUND, "no version 7"),
        (("models", "transition", "cnn", "1", "prod"), ExitCode.USAGE, "invalid stage 'prod'"),
        (("models", "alias", "cnn", "latest", "1"), ExitCode.USAGE, "reserved"),
    ]:
        result = run_mlkit(*args)
        assert result.returncode == code and message in result.stderr, (args, result.stderr)
    history = json.loads(run_mlkit("models", "history", "cnn", "--json").stdout)
    assert [h["what"] for h in history] == ["create_model", "create_version"]  # the failures changed nothing


def test_promote_no_holder_then_better_then_worse(model_run, registry):
    first = model_run(metrics={"val_acc": 0.70})
    better = model_run(metrics={"val_acc": 0.75})
    worse = model_run(metrics={"val_acc": 0.60})
    expr = "metrics.val_acc > champion"

    result = run_mlkit("models", "promote", "cnn", "--from-run", first, "--if-better", expr, "--json")
    assert result.returncode == 0, result.stderr
    decision = json.loads(result.stdout)
    assert decision["promoted"] and decision["version"] == 1 and decision["previous"] is None

    result = run_mlkit("models", "promote", "cnn", "--from-run", better, "--if-better", expr)
    assert result.returncode == 0 and "Promoted cnn version 2 to alias champion" in result.stderr
    assert registry.get_version_by_alias("cnn", "champion").version == 2

    result = run_mlkit("models", "promote", "cnn", "--from-run", worse, "--if-better", expr, "--json")
    assert result.returncode == ExitCode.PROMOTE_KEPT
    decision = json.loads(result.stdout)
    assert not decision["promoted"] and decision["version"] is None and decision["previous"] == 2
    assert decision["holder_value"] == 0.75 and "kept" in decision["reason"]
    assert [v.version for v in registry.list_model_versions("cnn")] == [1, 2]  # the loser is not registered
    assert registry.get_version_by_alias("cnn", "champion").version == 2

    bad = run_mlkit("models", "promote", "cnn", "--from-run", worse, "--if-better", "val_acc > champion")
    assert bad.returncode == ExitCode.USAGE and "invalid --if-better" in bad.stderr
