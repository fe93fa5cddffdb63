"""MLproject.example at the repository root is valid and resolves as its comments say."""

from __future__ import annotations

import shutil
from pathlib import Path

from mlkit.project import load_project

from helpers import REPO


def test_example_loads_and_resolves(tmp_path: Path, monkeypatch) -> None:
    shutil.copy(REPO / "MLproject.example", tmp_path / "MLproject")
    (tmp_path / "conda.yaml").write_text("name: example\ndependencies: [python=3.11]\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "prepare.py").write_text("")
    monkeypatch.chdir(tmp_path)
    project = load_project(tmp_path)
    assert project.name == "example"
    assert project.env is not None and project.env.kind == "conda"
    assert set(project.entry_points) == {"main", "evaluate"}
    main = project.entry_point("main").resolve({"batch_size": "64", "note": "x y"})
    assert main.argv == [
        "python", "train.py", "--lr", "0.001", "--epochs", "10", "--batch-size", "64", "--seed", "0",
        "--label", "baseline run", "--data", str(tmp_path / "data"),
        "--checkpoint-uri", "file:///tmp/checkpoints", "--note", "x y",
    ]  # fmt: skip
    assert main.types["seed"] == "int"
    evaluate = project.entry_point("evaluate").resolve({"run_id": "abc"})
    assert (
        evaluate.shell
        == "python evaluate.py --run-id abc --metric val_loss --format '{json}' 2>&1 | tee eval.log"
    )
    assert project.entry_point("prepare.py").resolve({"limit": "100"}).argv == [
        "python",
        "prepare.py",
        "--limit",
        "100",
    ]
